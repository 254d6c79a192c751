'use strict'
// One implementation, many published versions: each vendor/baileys-<version> package calls forVersion.
const { Boom } = require('./boom')
const { BufferJSON, initAuthCreds, useMultiFileAuthState, makeCacheableSignalKeyStore } = require('./auth')
const { createSocketFactory, DisconnectReason, WAMessageStubType } = require('./socket')
const { simClock } = require('./clock')

const Browsers = {
  ubuntu: (browser) => ['Ubuntu', browser, '22.04.4'],
  macOS: (browser) => ['Mac OS', browser, '14.4.1'],
  windows: (browser) => ['Windows', browser, '10.0.22631'],
  appropriate: (browser) => ['Ubuntu', browser, '22.04.4']
}

const jidNormalizedUser = (jid) => {
  if (!jid) return ''
  const [user, server] = String(jid).split('@')
  return `${user.split(':')[0]}@${server === 'c.us' ? 's.whatsapp.net' : server}`
}

const delay = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

function forVersion (version) {
  const makeWASocket = createSocketFactory(version)
  return {
    default: makeWASocket,
    makeWASocket,
    useMultiFileAuthState,
    initAuthCreds,
    makeCacheableSignalKeyStore,
    BufferJSON,
    DisconnectReason,
    WAMessageStubType,
    Browsers,
    Boom,
    jidNormalizedUser,
    delay,
    fetchLatestBaileysVersion: async () => ({ version: [2, 3000, 1023223821], isLatest: true }),
    // Sandbox only: the simulator's accelerated clock, for the keep-alive agent.
    waopsSimClock: simClock,
    version
  }
}

module.exports = { forVersion }
