// ESM build with no import-only exports map: `import` works, and so does `require('baileys')` from a
// CommonJS bot on Node.js >= 20.19 (require(esm), no top-level await here). The sandbox's loadable
// upgrade past 6.7.18: what pin_library moves a CommonJS bot to when WhatsApp refuses 6.7.18 (405).
import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)
const api = require('../../core/index.js').forVersion('7.0.0')

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
