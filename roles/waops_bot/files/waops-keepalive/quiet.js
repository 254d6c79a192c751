'use strict'
// Quiet hours ("01:00-06:00", wrapping past midnight allowed) in an IANA time zone, through Intl.
const MINUTES_PER_DAY = 1440

function parseQuietHours (spec) {
  if (spec == null || spec === '' || spec === 'off' || spec === 'none') return null
  const m = /^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$/.exec(String(spec))
  if (!m) throw new Error(`quiet hours must look like 01:00-06:00, got ${JSON.stringify(spec)}`)
  const start = Number(m[1]) * 60 + Number(m[2])
  const end = Number(m[3]) * 60 + Number(m[4])
  if (start >= MINUTES_PER_DAY || end > MINUTES_PER_DAY || start === end) {
    throw new Error(`quiet hours out of range: ${spec}`)
  }
  return { start, end, spec: String(spec).trim() }
}

function checkTimeZone (tz) {
  // Throws RangeError for an unknown zone, so a typo fails at start and not at 3 a.m.
  new Intl.DateTimeFormat('en-GB', { timeZone: tz }).format(0)
  return tz
}

const formatters = new Map()
// Minutes since local midnight (with the seconds as a fraction) at `ms` in zone `tz`.
function minuteOfDay (ms, tz) {
  let fmt = formatters.get(tz)
  if (!fmt) {
    fmt = new Intl.DateTimeFormat('en-GB', { timeZone: tz, hourCycle: 'h23', hour: '2-digit', minute: '2-digit', second: '2-digit' })
    formatters.set(tz, fmt)
  }
  const parts = Object.fromEntries(fmt.formatToParts(new Date(ms)).map((p) => [p.type, p.value]))
  return Number(parts.hour) * 60 + Number(parts.minute) + (Number(parts.second) + (ms % 1000) / 1000) / 60
}

// Milliseconds until the quiet window ends, or 0 when `ms` is outside it.
function quietRemainingMs (ms, quiet, tz) {
  if (!quiet) return 0
  const now = minuteOfDay(ms, tz)
  const inside = quiet.start < quiet.end
    ? now >= quiet.start && now < quiet.end
    : now >= quiet.start || now < quiet.end
  if (!inside) return 0
  const left = (quiet.end - now + MINUTES_PER_DAY) % MINUTES_PER_DAY
  return Math.max(1, Math.ceil(left * 60000))
}

module.exports = { parseQuietHours, checkTimeZone, minuteOfDay, quietRemainingMs }
