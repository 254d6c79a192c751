// ESM entry for bots written as modules (Baileys 6.7.19+ is ESM-only): the same agent as index.js,
// so a process that mixes both gets one agent per health file.
import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)
/** @type {typeof import('./index.js')} */
const agent = require('./index.js')

export const { attach, KeepAliveAgent, HealthAgent } = agent
export default agent
