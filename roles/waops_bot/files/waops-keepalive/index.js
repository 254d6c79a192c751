'use strict'
// waops keep-alive agent: attach(sock, opts) follows a Baileys socket and keeps the bot's health file
// (docs/CONTRACTS.md, contract 5) current. No dependencies: bots load it through NODE_PATH.
//
// opts: { file (default $WAOPS_HEALTH_FILE), bot ($WAOPS_BOT), clock (() => ms, default Date.now),
//         library: { name, version } }
// One agent per health file lives for the whole process, so state survives the bot's reconnects
// (each reconnect makes a new socket and calls attach again).
const fs = require('node:fs')
const path = require('node:path')

const agents = new Map()

const iso = (ms) => (ms == null ? null : new Date(ms).toISOString())

function disconnectReason (error) {
  const node = error?.data
  const child = node && Array.isArray(node.content) ? node.content[0] : undefined
  return child?.attrs?.type || error?.message || null
}

class HealthAgent {
  constructor (opts) {
    this.file = opts.file
    this.clock = opts.clock || Date.now
    this.state = {
      schema: 1,
      bot: opts.bot || process.env.WAOPS_BOT || null,
      connection: 'connecting',
      last_disconnect: null,
      session_started_at: null,
      last_keepalive_at: null,
      last_message_sent_at: null,
      last_message_received_at: null,
      qr: null,
      pairing_code: null,
      library: opts.library || null,
      updated_at: null
    }
  }

  // Merge a partial state and write the file; bots call this too (e.g. {connection: 'stopped'}).
  set (partial) {
    Object.assign(this.state, partial)
    this.write()
  }

  // Written to a temporary name and renamed, so a reader never sees half a file.
  write () {
    if (!this.file) return
    // updated_at is wall time (file freshness); the other times follow the bot's clock.
    this.state.updated_at = new Date().toISOString()
    const tmp = `${this.file}.tmp-${process.pid}`
    try {
      fs.mkdirSync(path.dirname(this.file), { recursive: true, mode: 0o700 })
      fs.writeFileSync(tmp, JSON.stringify(this.state) + '\n', { mode: 0o600 })
      fs.renameSync(tmp, this.file)
    } catch (err) {
      process.emitWarning(`waops-keepalive: cannot write ${this.file}: ${err.message}`)
    }
  }

  onConnectionUpdate (update) {
    const now = this.clock()
    const patch = {}
    if (update.qr) Object.assign(patch, { qr: update.qr, connection: 'waiting_link' })
    if (update.connection === 'connecting') patch.connection = 'connecting'
    if (update.connection === 'open') {
      Object.assign(patch, { connection: 'open', session_started_at: iso(now), qr: null, pairing_code: null })
    }
    if (update.connection === 'close') {
      const error = update.lastDisconnect?.error
      patch.connection = 'close'
      patch.last_disconnect = {
        code: error?.output?.statusCode ?? null,
        reason: disconnectReason(error),
        at: iso(now)
      }
    }
    if (Object.keys(patch).length) this.set(patch)
  }

  onMessages ({ messages }) {
    const now = iso(this.clock())
    const sent = messages.some((m) => m.key?.fromMe)
    const received = messages.some((m) => !m.key?.fromMe)
    if (sent) this.state.last_message_sent_at = now
    if (received) this.state.last_message_received_at = now
    this.write()
  }

  attachTo (sock) {
    sock.ev.on('connection.update', (update) => this.onConnectionUpdate(update))
    sock.ev.on('messages.upsert', (upsert) => this.onMessages(upsert))
    // Capture pairing codes without the bot having to report them.
    if (typeof sock.requestPairingCode === 'function' && !sock.requestPairingCode.waopsWrapped) {
      const original = sock.requestPairingCode.bind(sock)
      sock.requestPairingCode = async (...args) => {
        const code = await original(...args)
        this.set({ pairing_code: code, connection: 'waiting_link' })
        return code
      }
      sock.requestPairingCode.waopsWrapped = true
    }
    return this
  }
}

function attach (sock, opts = {}) {
  const file = opts.file || process.env.WAOPS_HEALTH_FILE || null
  let agent = agents.get(file)
  if (!agent) {
    agent = new HealthAgent({ ...opts, file })
    agents.set(file, agent)
  } else if (opts.clock) {
    agent.clock = opts.clock
  }
  return agent.attachTo(sock)
}

module.exports = { attach, HealthAgent }
