'use strict'
// The bot's logger, written the way real bots log (WAOPS_LOG_STYLE): pino's JSON lines (default),
// pino-pretty's multi-line records, console.log of JS objects, or logfmt. Each takes pino's calls
// (`logger.info(obj, msg)`, `child()`, `level`), which is all Baileys asks of a logger.
const util = require('util')
const pino = require('pino')

const LEVELS = { trace: 10, debug: 20, info: 30, warn: 40, error: 50, fatal: 60 }
const STYLES = ['pino', 'pretty', 'console', 'logfmt']

function makeLogger (style, level) {
  if (!STYLES.includes(style)) throw new Error(`WAOPS_LOG_STYLE must be one of ${STYLES.join(', ')}, not ${style}`)
  // Synchronous stdout keeps the logger's lines in order with the console lines around them.
  if (style === 'pretty') {
    const pretty = require('pino-pretty')
    return pino({ level }, pretty({ colorize: false, sync: true, destination: 1 }))
  }
  if (style === 'pino') return pino({ level }, pino.destination({ dest: 1, sync: true }))
  return plainLogger(style === 'logfmt' ? logfmtLine : consoleLine, level, {})
}

function plainLogger (format, level, bindings) {
  const min = LEVELS[level] ?? LEVELS.info
  const logger = { level, child: (more) => plainLogger(format, level, { ...bindings, ...more }) }
  for (const [name, n] of Object.entries(LEVELS)) {
    logger[name] = (obj, msg) => {
      if (n < min) return
      if (typeof obj === 'string') {
        msg = obj
        obj = {}
      }
      const fields = { ...bindings, ...(obj instanceof Error ? { err: obj } : obj) }
      process.stdout.write(format(name, msg || '', fields) + '\n')
    }
  }
  return logger
}

// console.log(msg, obj): node's own rendering, objects over several lines, errors with their stack
function consoleLine (level, msg, fields) {
  if (!Object.keys(fields).length) return msg
  return `${msg} ${util.inspect(fields, { depth: 6, breakLength: 100 })}`
}

function logfmtLine (level, msg, fields) {
  const pairs = [['time', new Date().toISOString()], ['level', level], ['msg', msg], ...flatten('', fields, 0)]
  return pairs.map(([k, v]) => `${k}=${quote(v)}`).join(' ')
}

function flatten (prefix, value, depth) {
  if (value instanceof Error) {
    const out = [[prefix ? `${prefix}.message` : 'message', value.message]]
    for (const [k, v] of Object.entries(value)) out.push(...flatten(prefix ? `${prefix}.${k}` : k, v, depth + 1))
    return out
  }
  if (value && typeof value === 'object' && depth < 6 && !Buffer.isBuffer(value)) {
    return Object.entries(value).flatMap(([k, v]) => flatten(prefix ? `${prefix}.${k}` : k, v, depth + 1))
  }
  return [[prefix, value]]
}

function quote (v) {
  const s = v === undefined ? '' : typeof v === 'string' ? v : Buffer.isBuffer(v) ? `<${v.length} bytes>` : String(v)
  return s === '' || /[\s"=]/.test(s) ? JSON.stringify(s) : s
}

module.exports = { makeLogger, STYLES }
