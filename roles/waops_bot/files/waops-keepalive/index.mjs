// ESM entry for bots written as modules: the same agent as index.js.
import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)
const agent = require('./index.js')

export const { attach, HealthAgent } = agent
export default agent
