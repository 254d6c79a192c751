// ESM-only build, as 7.x ships: `import makeWASocket from 'baileys'` works, require('baileys') does not.
import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)
const api = require('../../core/index.js').forVersion('7.0.0-rc.9')

export default api.makeWASocket
export const {
  makeWASocket,
  useMultiFileAuthState,
  initAuthCreds,
  makeCacheableSignalKeyStore,
  BufferJSON,
  DisconnectReason,
  Browsers,
  Boom,
  jidNormalizedUser,
  delay,
  fetchLatestBaileysVersion,
  waopsSimClock,
  version
} = api
