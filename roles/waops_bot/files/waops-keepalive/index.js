'use strict'
// waops keep-alive agent. A Baileys bot attaches it to each socket it makes, with one call:
//
//   const keepalive = require('waops-keepalive')          // or: import { attach } from 'waops-keepalive'
//   const agent = keepalive.attach(sock, { bot: 'shop', logger })
//   ... in connection.update on close:  if (agent.shouldReconnect(lastDisconnect)) reconnect()
//
// It sends `available` presence every `hours` (skipping quiet hours), runs the host agent's backup after
// each keep-alive, logs the session's age and, on every disconnect, how long the session lived, keeps the
// health file (docs/CONTRACTS.md "Health file") current, and decides reconnects after a 401: a few tries
// while session keys exist, then stop and say so. No dependencies: bots load it through NODE_PATH.
//
// Options (environment in brackets; docs/CONTRACTS.md "Keep-alive agent"):
//   file [WAOPS_HEALTH_FILE], bot [WAOPS_BOT], library {name, version},
//   hours [WAOPS_KEEPALIVE_HOURS, 12; 0 = no keep-alive], quietHours [WAOPS_QUIET_HOURS, 01:00-06:00; off],
//   tz [WAOPS_TZ, UTC], backup: {cmd: [argv]} | {socket: path} | false
//   [WAOPS_BACKUP_CMD (JSON list or words; "off"), else WAOPS_BACKUP_SOCKET, else
//    `waops-host backup --reason keepalive --bot <bot> --json` from PATH],
//   maxLoggedOutRetries [WAOPS_401_RETRIES, 3], authDir [WAOPS_AUTH_DIR] (files store: "session files exist"),
//   decryptFlood [WAOPS_DECRYPT_FLOOD, 10] (messages that failed to decrypt within DECRYPT_WINDOW_MS that
//   the host hears of at once: a Bad MAC flood keeps the connection open, so no close would tell it),
//   clock: () => ms | {now() => ms, speed} (an accelerated clock: timers are divided by its speed),
//   tickMs [WAOPS_KEEPALIVE_TICK_MS, 60000] (longest real wait between two looks at the clock),
//   logger (pino-like: info/warn/error(obj, msg); default: JSON lines on stdout).
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { writeAtomic, readPrevious } = require('./health')
const { parseQuietHours, checkTimeZone, quietRemainingMs } = require('./quiet')
const backup = require('./backup')

// Types only (comments; nothing is loaded at run time): the socket API this agent relies on, checked
// against each real Baileys release's .d.ts by the contract tests.
/** @typedef {import('baileys', { with: { 'resolution-mode': 'import' } }).WASocket} WASocket */
/** @typedef {import('baileys', { with: { 'resolution-mode': 'import' } }).ConnectionState} ConnectionState */
/** @typedef {import('baileys', { with: { 'resolution-mode': 'import' } }).BaileysEventMap} BaileysEventMap */
/** @typedef {import('@hapi/boom', { with: { 'resolution-mode': 'import' } }).Boom} Boom */

const LOGGED_OUT = 401
// proto.WebMessageInfo.StubType.CIPHERTEXT: Baileys upserts a message it could not decrypt as this stub,
// with the error in messageStubParameters ("Bad MAC", "No session record").
const CIPHERTEXT = 2
// A benign stub of the same type (a retry's placeholder), not a decryption failure.
const NOT_A_FAILURE = 'Message absent from node'
const DECRYPT_WINDOW_MS = 5 * 60 * 1000
const MAX_TRACKED = 1000 // failed messages remembered within the window (a flood must not grow memory)
const HOUR_MS = 3600 * 1000
/** @type {Map<string | null, KeepAliveAgent>} */
const agents = new Map()
const wrappedSockets = new WeakSet() // sockets whose requestPairingCode reports to the agent already

const iso = (ms) => (ms == null ? null : new Date(ms).toISOString())
const parseIso = (s) => { const t = Date.parse(s); return Number.isFinite(t) ? t : null }
const seconds = (ms) => (ms == null ? null : Math.round(ms / 1000))

/** @param {Boom | undefined} error */
function disconnectReason (error) {
  const node = error?.data
  const child = node && Array.isArray(node.content) ? node.content[0] : undefined
  return child?.attrs?.type || error?.message || null
}

// A pino-style line when the bot gives no logger.
function jsonLogger (bindings) {
  const write = (level) => (obj, msg) => {
    const line = { level, time: Date.now(), pid: process.pid, hostname: os.hostname(), ...bindings, ...obj, msg }
    process.stdout.write(JSON.stringify(line) + '\n')
  }
  return { info: write(30), warn: write(40), error: write(50) }
}

function makeClock (clock) {
  if (typeof clock === 'function') return { now: clock, speed: () => 1 }
  if (clock && typeof clock.now === 'function') {
    return { now: () => clock.now(), speed: () => (clock.speed > 0 ? clock.speed : 1) }
  }
  return { now: Date.now, speed: () => 1 }
}

function backupSpec (opt, env, bot) {
  if (opt === false || opt === null) return null
  if (opt && opt.socket) return { socket: opt.socket }
  if (opt && opt.cmd) return { cmd: backup.parseCommand(opt.cmd, bot) }
  // An explicit command wins; then the socket the waops_bot role sets up; then the agent on PATH.
  if (!env.WAOPS_BACKUP_CMD && env.WAOPS_BACKUP_SOCKET) return { socket: env.WAOPS_BACKUP_SOCKET }
  const cmd = backup.parseCommand(env.WAOPS_BACKUP_CMD, bot)
  return cmd ? { cmd } : null
}

class KeepAliveAgent {
  constructor (opts) {
    const env = process.env
    this.file = opts.file
    this.bot = opts.bot || env.WAOPS_BOT || 'bot'
    this.clock = makeClock(opts.clock)
    this.intervalMs = Number(opts.hours ?? env.WAOPS_KEEPALIVE_HOURS ?? 12) * HOUR_MS
    this.tickMs = Number(opts.tickMs ?? env.WAOPS_KEEPALIVE_TICK_MS ?? 60000)
    this.maxRetries = Number(opts.maxLoggedOutRetries ?? env.WAOPS_401_RETRIES ?? 3)
    this.decryptFlood = Number(opts.decryptFlood ?? env.WAOPS_DECRYPT_FLOOD ?? 10)
    this.failedDecrypts = new Map() // message id -> wall ms: a retried message counts once
    this.floodReportedAt = null
    this.authDir = opts.authDir ?? env.WAOPS_AUTH_DIR ?? null
    this.authStore = opts.authStore || env.WAOPS_AUTH_STORE || 'files'
    this.backup = backupSpec(opts.backup, env, this.bot)
    this.log = opts.logger
      ? (opts.logger.child ? opts.logger.child({ class: 'waops-keepalive' }) : opts.logger)
      : jsonLogger({ class: 'waops-keepalive' })
    // A typo in the quiet hours or the zone must not take the bot down for every customer (it would
    // crash-loop at start): say so loudly and keep the defaults.
    this.quiet = this.setting('quiet hours', () => parseQuietHours(opts.quietHours ?? env.WAOPS_QUIET_HOURS ?? '01:00-06:00'),
      () => parseQuietHours('01:00-06:00'))
    this.tz = this.setting('time zone', () => checkTimeZone(opts.tz || env.WAOPS_TZ || 'UTC'), () => 'UTC')
    this.sock = null
    this.timer = null
    this.backupRunning = false
    this.reporting = false
    this.pendingReport = null
    this.openedAt = null // this connection (ms on the bot's clock)
    const previous = (this.file && readPrevious(this.file)) || {}
    // Kept in the health file: a restarted bot (pm2 restarts on exit) does not get a fresh set of tries.
    this.loggedOutTries = Number(previous.logged_out_attempts) || 0
    this.state = {
      schema: 1,
      bot: this.bot,
      connection: 'connecting',
      last_disconnect: null,
      session_started_at: null,
      last_keepalive_at: previous.last_keepalive_at || null,
      last_message_sent_at: previous.last_message_sent_at || null,
      last_message_received_at: previous.last_message_received_at || null,
      qr: null,
      pairing_code: null,
      library: opts.library || null,
      // Additions of the keep-alive agent (optional fields of the health file).
      linked_at: previous.linked_at || null,
      keepalive: {
        interval_hours: this.intervalMs / HOUR_MS,
        quiet_hours: this.quiet ? this.quiet.spec : null,
        tz: this.tz,
        next_at: null,
        count: 0,
        last_backup: previous.keepalive?.last_backup || null
      },
      stopped_reason: null,
      logged_out_attempts: this.loggedOutTries,
      // Not carried over: a restarted bot (a prune or restore) starts with fresh keys and no failures.
      decrypt_failures: null,
      updated_at: null
    }
    this.write()
  }

  // Merge a partial state and write the file; bots may call this too (e.g. {connection: 'stopped'}).
  set (partial) {
    Object.assign(this.state, partial)
    this.write()
  }

  write () {
    if (!this.file) return
    // updated_at is wall time (file freshness for the host agent); the other times follow the bot's clock.
    this.state.updated_at = new Date().toISOString()
    try {
      writeAtomic(this.file, this.state)
    } catch (err) {
      this.log.warn({ err: err.message, file: this.file }, 'waops-keepalive: cannot write the health file')
    }
  }

  // -- socket events -------------------------------------------------------------------------------
  /** @param {WASocket} sock @param {Partial<ConnectionState>} update */
  onConnectionUpdate (sock, update) {
    if (sock !== this.sock) return // an old socket's late events
    const now = this.clock.now()
    const patch = {}
    if (update.qr) Object.assign(patch, { qr: update.qr, connection: 'waiting_link' })
    if (update.isNewLogin) patch.linked_at = iso(now)
    if (update.connection === 'connecting') patch.connection = 'connecting'
    if (update.connection === 'open') {
      this.openedAt = now
      this.loggedOutTries = 0
      patch.logged_out_attempts = 0
      if (!this.state.linked_at) patch.linked_at = iso(now) // first open we saw of a device linked before
      Object.assign(patch, { connection: 'open', session_started_at: iso(now), qr: null, pairing_code: null, stopped_reason: null })
    }
    if (update.connection === 'close') {
      const error = /** @type {Boom | undefined} */ (update.lastDisconnect?.error)
      const code = error?.output?.statusCode ?? null
      const reason = disconnectReason(error)
      patch.connection = 'close'
      patch.last_disconnect = { code, reason, at: iso(now) }
      if (this.openedAt != null) {
        this.log.info({ bot: this.bot, code, reason, session_duration_s: seconds(now - this.openedAt), session_started_at: iso(this.openedAt), device_age_s: this.deviceAgeS(now) }, 'session ended')
      }
      this.openedAt = null
    }
    if (Object.keys(patch).length) this.set(patch)
    if (update.connection === 'open') this.schedule()
    if (update.connection === 'close') this.reportClose(patch.last_disconnect.code)
  }

  // The host hears of a close at once through the root socket (the health file is written first, so
  // its quick check reads this close). One report in flight; closes meanwhile collapse into the latest.
  // `at` is wall time: the host compares it with its own clock.
  reportClose (code, at = new Date().toISOString()) {
    this.report({ close: { code: Number.isInteger(code) ? code : null, at } })
  }

  // One report in flight; reports meanwhile collapse into the latest.
  report (doc) {
    if (!this.backup?.socket) return
    if (this.reporting) {
      this.pendingReport = doc
      return
    }
    this.reporting = true
    backup.report(this.backup.socket, doc)
      .then((result) => {
        if (!result.ok) this.log.warn({ bot: this.bot, report: Object.keys(doc)[0], error: result.error }, 'report to the host failed')
      })
      .finally(() => {
        this.reporting = false
        const next = this.pendingReport
        this.pendingReport = null
        if (next) this.report(next)
      })
  }

  /** @param {BaileysEventMap['messages.upsert']} upsert */
  onMessages ({ messages }) {
    this.countDecryptFailures(messages)
    const now = iso(this.clock.now())
    if (messages.some((m) => m.key?.fromMe)) this.state.last_message_sent_at = now
    if (messages.some((m) => !m.key?.fromMe)) this.state.last_message_received_at = now
    this.write()
  }

  // Failed decryptions within the window, in the health file for the host's check; a flood is reported
  // to the host at once (once per window), through the same root socket as a close. Wall time: the
  // host compares it with its own clock.
  countDecryptFailures (messages) {
    const failed = messages.filter((m) => m?.messageStubType === CIPHERTEXT &&
      String(m.messageStubParameters?.[0] ?? '') !== NOT_A_FAILURE)
    if (!failed.length) return
    const now = Date.now()
    for (const m of failed) {
      const id = String(m.key?.id ?? `${now}-${this.failedDecrypts.size}`)
      this.failedDecrypts.delete(id) // re-inserted: the map stays in time order
      this.failedDecrypts.set(id, now)
    }
    for (const [id, at] of this.failedDecrypts) {
      if (at > now - DECRYPT_WINDOW_MS && this.failedDecrypts.size <= MAX_TRACKED) break
      this.failedDecrypts.delete(id)
    }
    const count = this.failedDecrypts.size
    const reason = String(failed[failed.length - 1].messageStubParameters?.[0] ?? '').slice(0, 100) || null
    this.state.decrypt_failures = { count, window_s: DECRYPT_WINDOW_MS / 1000, last_reason: reason, last_at: iso(now) }
    const flood = this.decryptFlood > 0 && count >= this.decryptFlood
    if (flood && !(this.floodReportedAt > now - DECRYPT_WINDOW_MS)) {
      this.floodReportedAt = now
      this.log.error({ bot: this.bot, failures: count, window_s: DECRYPT_WINDOW_MS / 1000, reason }, 'messages failing to decrypt: reporting to the host')
      this.report({ decrypt: { failures: count, at: iso(now) } })
    }
  }

  deviceAgeS (now) {
    const linked = parseIso(this.state.linked_at)
    return linked == null ? null : seconds(now - linked)
  }

  // -- 401: bounded reconnects ---------------------------------------------------------------------
  sessionFilesExist () {
    if (this.authStore === 'files' && this.authDir) return fs.existsSync(path.join(this.authDir, 'creds.json'))
    // Other stores (PostgreSQL rows): the socket's creds still name a linked device.
    return Boolean(this.sock?.authState?.creds?.me?.id)
  }

  // The bot's reconnect rule. Any code but 401: reconnect. 401 (device removed, session expired):
  // reconnect at most maxLoggedOutRetries times in a row while session keys exist, then stop for good.
  /** @param {ConnectionState['lastDisconnect'] | number} lastDisconnect */
  shouldReconnect (lastDisconnect) {
    const error = typeof lastDisconnect === 'number' ? undefined : /** @type {Boom | undefined} */ (lastDisconnect?.error)
    const code = typeof lastDisconnect === 'number' ? lastDisconnect : error?.output?.statusCode
    if (code !== LOGGED_OUT) return true
    const filesExist = this.sessionFilesExist()
    if (filesExist && this.loggedOutTries < this.maxRetries) {
      this.loggedOutTries += 1
      this.set({ logged_out_attempts: this.loggedOutTries })
      this.log.warn({ bot: this.bot, code, attempt: this.loggedOutTries, max_attempts: this.maxRetries }, 'logged out (401): reconnect attempt')
      return true
    }
    const why = filesExist
      ? `logged out (401) ${this.loggedOutTries + 1} times in a row: the device was removed; link it again`
      : 'logged out (401) and no session keys left: link the device again'
    this.stop(why, code)
    return false
  }

  stop (reason, code = null) {
    clearTimeout(this.timer)
    this.timer = null
    this.log.error({ bot: this.bot, code, attempts: this.loggedOutTries }, `stopped reconnecting: ${reason}`)
    this.set({ connection: 'stopped', stopped_reason: reason })
  }

  // -- keep-alive schedule -------------------------------------------------------------------------
  isOpen () {
    return this.state.connection === 'open' && this.sock != null && this.sock.ws?.isOpen !== false
  }

  setting (what, read, fallback) {
    try {
      return read()
    } catch (err) {
      const used = fallback()
      this.log.error({ bot: this.bot, err: err?.message, using: used?.spec ?? used }, `keep-alive: invalid ${what}, using the default`)
      return used
    }
  }

  dueAt () {
    const last = parseIso(this.state.last_keepalive_at)
    const base = last ?? this.openedAt ?? this.clock.now()
    return base + this.intervalMs
  }

  schedule () {
    if (!(this.intervalMs > 0) || this.state.connection === 'stopped') return
    clearTimeout(this.timer)
    const now = this.clock.now()
    let wait = this.dueAt() - now
    if (wait <= 0) {
      wait = quietRemainingMs(now, this.quiet, this.tz) // due: wait out quiet hours first
      if (wait > 0 && this.postponed !== this.dueAt()) {
        this.postponed = this.dueAt()
        this.log.info({ bot: this.bot, due_at: iso(this.dueAt()), until: iso(now + wait), quiet_hours: this.quiet.spec, tz: this.tz }, 'keep-alive postponed: quiet hours')
      }
    }
    if (wait <= 0) {
      this.timer = setTimeout(() => this.tick(), 0)
    } else {
      const next = iso(now + wait)
      if (this.state.keepalive.next_at !== next) {
        this.state.keepalive.next_at = next
        this.write()
      }
      // Sim ms -> real ms; never sleep longer than tickMs, so a sped-up or advanced clock is noticed.
      const real = Math.min(Math.ceil(wait / this.clock.speed()), this.tickMs)
      this.timer = setTimeout(() => this.schedule(), Math.max(real, 1))
    }
    this.timer.unref?.()
  }

  async tick () {
    this.timer = null
    const now = this.clock.now()
    if (now < this.dueAt() || quietRemainingMs(now, this.quiet, this.tz) > 0) return this.schedule()
    if (!this.isOpen()) {
      // Not open: nothing is sent; the next open reschedules (a due keep-alive goes out right then).
      this.log.info({ bot: this.bot, connection: this.state.connection }, 'keep-alive skipped: connection not open')
      return
    }
    const sock = this.sock
    try {
      await sock.sendPresenceUpdate('available')
    } catch (err) {
      this.log.warn({ bot: this.bot, err: err?.message }, 'keep-alive failed')
      this.state.last_keepalive_at = iso(now) // try again a full interval later, not in a tight loop
      this.write()
      return this.schedule()
    }
    this.state.keepalive.count += 1
    this.state.last_keepalive_at = iso(now)
    this.state.keepalive.next_at = iso(now + this.intervalMs)
    this.write()
    this.log.info({
      bot: this.bot,
      at: iso(now),
      session_age_s: seconds(now - (this.openedAt ?? now)),
      device_age_s: this.deviceAgeS(now),
      session_started_at: iso(this.openedAt),
      keepalive_count: this.state.keepalive.count,
      next_at: this.state.keepalive.next_at
    }, 'keep-alive sent')
    this.schedule()
    this.runBackup()
  }

  async runBackup () {
    if (!this.backup) return
    if (this.backupRunning) {
      this.log.warn({ bot: this.bot }, 'keep-alive backup skipped: the previous one is still running')
      return
    }
    this.backupRunning = true
    const started = Date.now()
    try {
      const result = this.backup.socket
        ? await backup.runSocket(this.backup.socket)
        : await backup.runCommand(this.backup.cmd)
      const record = { ok: result.ok, id: result.id, at: iso(this.clock.now()), error: result.error || null }
      this.state.keepalive.last_backup = record
      this.write()
      const fields = { bot: this.bot, backup_id: result.id, verified: result.verified, seconds: (Date.now() - started) / 1000 }
      if (result.ok) this.log.info(fields, 'keep-alive backup done')
      else this.log.error({ ...fields, exit_code: result.exitCode, error: result.error }, 'keep-alive backup failed')
    } finally {
      this.backupRunning = false
    }
  }

  /** @param {WASocket} sock */
  attachTo (sock) {
    this.sock = sock
    sock.ev.on('connection.update', (update) => this.onConnectionUpdate(sock, update))
    sock.ev.on('messages.upsert', (upsert) => this.onMessages(upsert))
    // Capture pairing codes without the bot having to report them.
    if (typeof sock.requestPairingCode === 'function' && !wrappedSockets.has(sock)) {
      const original = sock.requestPairingCode.bind(sock)
      sock.requestPairingCode = async (...args) => {
        const code = await original(...args)
        this.set({ pairing_code: code, connection: 'waiting_link' })
        return code
      }
      wrappedSockets.add(sock)
    }
    return this
  }
}

// One agent per health file for the whole process: its state (last keep-alive, 401 attempts) survives
// the bot's reconnects, each of which makes a new socket and calls attach again.
/** @param {WASocket} sock @param {Record<string, any>} [opts] */
function attach (sock, opts = {}) {
  const file = opts.file || process.env.WAOPS_HEALTH_FILE || null
  let agent = agents.get(file)
  if (!agent) {
    agent = new KeepAliveAgent({ ...opts, file })
    agents.set(file, agent)
  }
  return agent.attachTo(sock)
}

module.exports = { attach, KeepAliveAgent, HealthAgent: KeepAliveAgent }
