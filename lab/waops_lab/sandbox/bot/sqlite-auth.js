'use strict'
// Baileys auth state in one SQLite database file: table baileys_auth(key TEXT PRIMARY KEY, value TEXT),
// Baileys' key names, BufferJSON values (docs/CONTRACTS.md "SQLite session store"). Real bots use
// better-sqlite3; its prebuilt binaries come from GitHub and building it needs a compiler and node's
// headers, none of which a lab host has, so the sandbox uses sql.js (SQLite compiled to WebAssembly,
// from the npm registry). sql.js works on a copy in memory: every change is written back whole, as a new
// file beside the database renamed over it, so a reader always finds a complete database.
const fs = require('fs')
const path = require('path')
const { BufferJSON, initAuthCreds } = require('baileys')

const TABLE_NAME = /^[A-Za-z_][A-Za-z0-9_]{0,62}$/

async function useSqliteAuthState (file, { table = 'baileys_auth' } = {}) {
  if (!TABLE_NAME.test(table)) throw new Error(`invalid table name: ${table}`)
  const SQL = await require('sql.js')()
  fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 })
  const db = fs.existsSync(file) ? new SQL.Database(fs.readFileSync(file)) : new SQL.Database()
  db.run('PRAGMA journal_mode = DELETE') // a file written by better-sqlite3 may say WAL; ours has no -wal
  db.run(`CREATE TABLE IF NOT EXISTS ${table} (key TEXT PRIMARY KEY, value TEXT NOT NULL)`)

  const persist = () => {
    const tmp = path.join(path.dirname(file), `.${path.basename(file)}.tmp-${process.pid}`)
    const fd = fs.openSync(tmp, 'w', 0o600)
    try {
      fs.writeSync(fd, db.export())
      fs.fsyncSync(fd)
    } finally {
      fs.closeSync(fd)
    }
    fs.renameSync(tmp, file)
  }
  const read = (key) => {
    const stmt = db.prepare(`SELECT value FROM ${table} WHERE key = ?`)
    try {
      stmt.bind([key])
      return stmt.step() ? JSON.parse(stmt.get()[0], BufferJSON.reviver) : null
    } finally {
      stmt.free()
    }
  }
  const write = (key, value) => db.run(
    `INSERT INTO ${table} (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value`,
    [key, JSON.stringify(value, BufferJSON.replacer)])

  const creds = read('creds') || initAuthCreds()
  persist()
  return {
    state: {
      creds,
      keys: {
        get: async (type, ids) => {
          const data = {}
          for (const id of ids) data[id] = read(`${type}-${id}`)
          return data
        },
        set: async (data) => {
          db.run('BEGIN')
          try {
            for (const category in data) {
              for (const id in data[category]) {
                const value = data[category][id]
                if (value) write(`${category}-${id}`, value)
                else db.run(`DELETE FROM ${table} WHERE key = ?`, [`${category}-${id}`])
              }
            }
            db.run('COMMIT')
          } catch (err) {
            db.run('ROLLBACK')
            throw err
          }
          persist()
        }
      }
    },
    saveCreds: async () => {
      write('creds', creds)
      persist()
    }
  }
}

module.exports = { useSqliteAuthState }
