'use strict'
// The backup after a keep-alive: the host agent `waops-host backup --reason keepalive --bot <bot>`.
// Either run as a command (execFile, no shell) or, on hosts provisioned by the waops_bot role, requested
// through a unix socket that a root-owned systemd socket unit answers by running exactly that command
// (the bot user cannot read the agent's config, and a hardened unit with NoNewPrivileges cannot sudo).
const { execFile } = require('node:child_process')
const net = require('node:net')

const TIMEOUT_MS = 10 * 60 * 1000
const REPORT_TIMEOUT_MS = 60 * 1000 // the host's quick check and its webhook post

function defaultCommand (bot) {
  return ['waops-host', 'backup', '--reason', 'keepalive', '--bot', bot, '--json']
}

// WAOPS_BACKUP_CMD: a JSON array of arguments, or words separated by spaces; "off" disables.
function parseCommand (value, bot) {
  if (value == null || value === '') return defaultCommand(bot)
  if (Array.isArray(value)) return value.map(String)
  const text = String(value).trim()
  if (text === 'off' || text === 'none') return null
  if (text.startsWith('[')) return JSON.parse(text).map(String)
  return text.split(/\s+/)
}

// The agent prints {"command": "backup", "results": [{"id", "verified", ...}]} with --json.
function summarize (stdout) {
  try {
    const doc = JSON.parse(String(stdout).trim().split('\n').pop())
    const r = (doc.results || [])[0] || {}
    // skipped: the agent's rate limit answered with the newest keep-alive backup instead of a new one
    return { id: r.id || null, verified: r.verified ?? null, skipped: r.skipped === true, error: r.error || null }
  } catch {
    return { id: null, verified: null, skipped: false, error: null }
  }
}

function runCommand (argv, timeoutMs = TIMEOUT_MS) {
  return new Promise((resolve) => {
    execFile(argv[0], argv.slice(1), { timeout: timeoutMs, maxBuffer: 1 << 20 }, (err, stdout, stderr) => {
      const summary = summarize(stdout)
      if (err) {
        const code = typeof err.code === 'number' ? err.code : null
        const detail = summary.error || String(stderr || err.message).trim().split('\n').pop()
        resolve({ ok: false, exitCode: code, id: summary.id, error: detail.slice(0, 300) })
      } else {
        resolve({ ok: true, exitCode: 0, ...summary })
      }
    })
  })
}

// One request on the root socket: `line` ('' = a backup: connecting is the request; else one JSON line,
// the close report), then the service's one JSON line back.
function request (socketPath, line, timeoutMs) {
  return new Promise((resolve) => {
    let out = ''
    let done = false
    const finish = (result) => { if (!done) { done = true; clearTimeout(timer); resolve(result) } }
    const conn = net.createConnection(socketPath)
    const timer = setTimeout(() => { conn.destroy(); finish({ out: null, error: 'timed out' }) }, timeoutMs)
    conn.setEncoding('utf8')
    conn.on('data', (chunk) => { if (out.length < 1 << 20) out += chunk })
    conn.on('error', (err) => finish({ out: null, error: err.message }))
    conn.on('end', () => finish({ out, error: null }))
    conn.end(line)
  })
}

function lastJson (out) {
  try { return JSON.parse(String(out).trim().split('\n').pop()) } catch { return null }
}

async function runSocket (socketPath, timeoutMs = TIMEOUT_MS) {
  const { out, error } = await request(socketPath, '', timeoutMs)
  if (out == null) return { ok: false, exitCode: null, id: null, error }
  const summary = summarize(out)
  const ok = lastJson(out)?.ok === true
  return { ok, exitCode: null, ...summary, error: ok ? null : (summary.error || `no result from the backup service behind ${socketPath} (its journal says why)`) }
}

// The connection closed: tell the host at once, so it raises the event now rather than at its next check.
// The unit behind the socket names the bot; the line carries only the code and the time.
async function reportClose (socketPath, code, at, timeoutMs = REPORT_TIMEOUT_MS) {
  return report(socketPath, { close: { code: Number.isInteger(code) ? code : null, at } }, timeoutMs)
}

// One report line ({close: ...} or {decrypt: ...}) and the host's answer.
async function report (socketPath, message, timeoutMs = REPORT_TIMEOUT_MS) {
  const { out, error } = await request(socketPath, JSON.stringify(message) + '\n', timeoutMs)
  const doc = out == null ? null : lastJson(out)
  return { ok: doc?.ok === true, active: Array.isArray(doc?.active) ? doc.active : null, error: error || doc?.error || (doc ? null : 'no answer') }
}

module.exports = { defaultCommand, parseCommand, runCommand, runSocket, reportClose, report }
