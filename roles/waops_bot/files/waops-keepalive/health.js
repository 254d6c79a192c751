'use strict'
// The health file (docs/CONTRACTS.md "Health file"), written so that a reader
// (waops-host facts, check) never sees half a file: temporary name, fsync, rename, fsync of the folder.
const fs = require('node:fs')
const path = require('node:path')

function writeAtomic (file, doc) {
  const dir = path.dirname(file)
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 })
  const tmp = path.join(dir, `.${path.basename(file)}.tmp-${process.pid}`)
  const fd = fs.openSync(tmp, 'w', 0o600)
  try {
    fs.writeSync(fd, JSON.stringify(doc) + '\n')
    fs.fsyncSync(fd) // the data is on disk before the name points at it (a crash leaves old or new)
  } finally {
    fs.closeSync(fd)
  }
  fs.renameSync(tmp, file)
  try {
    const dfd = fs.openSync(dir, 'r')
    try { fs.fsyncSync(dfd) } finally { fs.closeSync(dfd) }
  } catch { /* a folder fsync is best effort (some filesystems refuse it) */ }
}

// The previous state, so last keep-alive and link time survive a restart of the bot.
function readPrevious (file) {
  try {
    const doc = JSON.parse(fs.readFileSync(file, 'utf8'))
    return doc && typeof doc === 'object' ? doc : null
  } catch {
    return null
  }
}

module.exports = { writeAtomic, readPrevious }
