'use strict'
// waops sandbox bot: written the way real Baileys bots are, so the simulator, the logs and the auth
// store behave like production. Configuration: the bot process contract in docs/CONTRACTS.md.
const { default: makeWASocket, useMultiFileAuthState, DisconnectReason, Browsers, waopsSimClock } = require('baileys')
const { version: libraryVersion } = require('baileys/package.json')
const { makeLogger } = require('./log-style')

const env = process.env
const BOT = env.WAOPS_BOT || 'sandbox'
const PHONE = (env.WAOPS_PHONE || '').replace(/\D/g, '')
const PAIRING = env.WAOPS_PAIRING === 'code' ? 'code' : 'qr'
const RECONNECT_DELAY_MS = Number(env.WAOPS_RECONNECT_DELAY_MS || 3000)
const logger = makeLogger(env.WAOPS_LOG_STYLE || 'pino', env.WAOPS_LOG_LEVEL || 'info')

// The keep-alive agent is installed beside the bot (NODE_PATH); a bot without it still runs.
let keepalive = null
try {
  keepalive = require('waops-keepalive')
} catch (err) {
  logger.warn({ err: err.message }, 'waops-keepalive not found (NODE_PATH), no health file')
}

let pgPool = null
async function loadAuthState () {
  if (env.WAOPS_AUTH_STORE === 'postgres') {
    const { Pool } = require('pg')
    const { usePostgresAuthState } = require('./pg-auth')
    pgPool = pgPool || new Pool({
      host: env.WAOPS_PG_HOST,
      port: Number(env.WAOPS_PG_PORT || 5432),
      database: env.WAOPS_PG_DB,
      user: env.WAOPS_PG_USER,
      password: env.WAOPS_PG_PASSWORD || undefined,
      max: 4
    })
    return usePostgresAuthState(pgPool, { table: env.WAOPS_PG_TABLE || 'baileys_auth', session: BOT })
  }
  if (env.WAOPS_AUTH_STORE === 'sqlite') {
    const { useSqliteAuthState } = require('./sqlite-auth')
    return useSqliteAuthState(env.WAOPS_SQLITE_PATH || './auth.db', { table: env.WAOPS_SQLITE_TABLE || 'baileys_auth' })
  }
  return useMultiFileAuthState(env.WAOPS_AUTH_DIR || './auth')
}

function answer (text) {
  const command = text.trim().toLowerCase()
  if (command === 'test') return `✅ ${BOT} is up (baileys ${libraryVersion})`
  if (command === 'ping') return 'pong'
  return `echo: ${text}`
}

let health = null
let sock = null

async function connectToWhatsApp () {
  const { state, saveCreds } = await loadAuthState()
  sock = makeWASocket({
    auth: state,
    logger,
    browser: Browsers.ubuntu('Chrome'),
    waWebSocketUrl: env.WAOPS_SIM_URL,
    connectTimeoutMs: Number(env.WAOPS_CONNECT_TIMEOUT_MS || 20000),
    printQRInTerminal: false
  })
  if (keepalive) {
    // One call per socket. Everything else (interval, quiet hours, backup command) comes from the
    // environment; the sandbox hands over the simulator's accelerated clock, a real bot leaves it out.
    health = keepalive.attach(sock, {
      file: env.WAOPS_HEALTH_FILE,
      bot: BOT,
      logger,
      clock: waopsSimClock,
      library: { name: 'baileys', version: libraryVersion }
    })
  }

  sock.ev.on('creds.update', saveCreds)

  let codeRequested = false
  sock.ev.on('connection.update', async (update) => {
    const { connection, lastDisconnect, qr } = update
    if (qr) {
      if (PAIRING === 'code') {
        if (!codeRequested && !sock.authState.creds.registered) {
          codeRequested = true
          try {
            const code = await sock.requestPairingCode(PHONE)
            console.log(`Pairing code: ${code}`)
            logger.info({ code }, 'pairing code requested, type it on the phone (Linked devices -> Link with phone number)')
          } catch (err) {
            logger.error({ err }, 'could not request a pairing code')
          }
        }
      } else {
        console.log('Scan this QR code with WhatsApp (Linked devices -> Link a device):')
        console.log(qr)
        logger.info({ qr }, 'QR code received')
      }
    }
    if (connection === 'open') {
      console.log(`Connected as ${sock.user?.id}`)
    }
    if (connection === 'close') {
      const code = lastDisconnect?.error?.output?.statusCode
      switch (code) {
        case DisconnectReason.loggedOut:
          console.log('Device Logged Out, Please Scan Again And Run.')
          break
        case DisconnectReason.connectionReplaced:
          console.log('Connection Replaced, Another New Session Opened, Please Close Current Session First')
          break
        case DisconnectReason.restartRequired:
          console.log('Restart Required, Restarting...')
          break
        case DisconnectReason.connectionLost:
          console.log('Connection Lost from Server, reconnecting...')
          break
        case DisconnectReason.connectionClosed:
          console.log('Connection closed, reconnecting....')
          break
        case DisconnectReason.badSession:
          console.log('Bad Session File, Please Delete Session and Scan Again')
          break
        default:
          console.log(`Unknown DisconnectReason: ${code}|${lastDisconnect?.error?.message}`)
      }
      // The canonical rule is "reconnect unless logged out"; the keep-alive agent refines it for 401:
      // a few tries while session keys exist, then stop for good (it logs why and marks the health file).
      const reconnect = health ? health.shouldReconnect(lastDisconnect) : code !== DisconnectReason.loggedOut
      if (reconnect) {
        setTimeout(() => connectToWhatsApp().catch(fatal), code === DisconnectReason.restartRequired ? 0 : RECONNECT_DELAY_MS)
      } else {
        if (health && health.state.connection !== 'stopped') health.set({ connection: 'stopped' })
        // Stay up, idle: an exit would make pm2 start the bot again into the same 401.
        setInterval(() => {}, 1 << 30)
      }
    }
  })

  sock.ev.on('messages.upsert', async ({ messages, type }) => {
    if (type !== 'notify') return
    for (const m of messages) {
      if (m.key.fromMe) continue
      const text = m.message?.conversation || m.message?.extendedTextMessage?.text
      if (!text) continue
      try {
        await sock.sendMessage(m.key.remoteJid, { text: answer(text) })
      } catch (err) {
        logger.error({ err, data: err?.data }, 'failed to send reply')
      }
    }
  })
  return sock
}

function fatal (err) {
  logger.fatal({ err }, 'bot failed')
  process.exit(1)
}

for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => {
    if (health) health.set({ connection: 'stopped' })
    process.exit(0)
  })
}

logger.info({ bot: BOT, library: libraryVersion, store: env.WAOPS_AUTH_STORE || 'files', pairing: PAIRING }, 'starting bot')
connectToWhatsApp().catch(fatal)
