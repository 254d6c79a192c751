'use strict'
// Baileys auth state in PostgreSQL: table baileys_auth(session, key, value jsonb, updated_at), rows scoped
// by session = the bot's name (docs/CONTRACTS.md). Keys use the files store's names without ".json".
const { BufferJSON, initAuthCreds } = require('baileys')

const TABLE_NAME = /^[a-z_][a-z0-9_]{0,62}$/

const toJson = (value) => JSON.stringify(value, BufferJSON.replacer)
// pg parses jsonb into objects; re-serialising lets the reviver turn {type:'Buffer'} back into Buffers.
const fromJson = (value) => JSON.parse(JSON.stringify(value), BufferJSON.reviver)

async function usePostgresAuthState (pool, { table = 'baileys_auth', session }) {
  if (!TABLE_NAME.test(table)) throw new Error(`invalid table name: ${table}`)
  if (!session) throw new Error('a session name is required')
  await pool.query(`CREATE TABLE IF NOT EXISTS ${table} (
    session text NOT NULL,
    key text NOT NULL,
    value jsonb NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (session, key))`)

  const read = async (keys) => {
    const { rows } = await pool.query(`SELECT key, value FROM ${table} WHERE session = $1 AND key = ANY($2)`, [session, keys])
    return new Map(rows.map((r) => [r.key, fromJson(r.value)]))
  }
  const creds = (await read(['creds'])).get('creds') || initAuthCreds()

  return {
    state: {
      creds,
      keys: {
        get: async (type, ids) => {
          const found = await read(ids.map((id) => `${type}-${id}`))
          const data = {}
          for (const id of ids) data[id] = found.get(`${type}-${id}`) ?? null
          return data
        },
        set: async (data) => {
          const upKeys = []
          const upValues = []
          const delKeys = []
          for (const category in data) {
            for (const id in data[category]) {
              const value = data[category][id]
              if (value) {
                upKeys.push(`${category}-${id}`)
                upValues.push(toJson(value))
              } else {
                delKeys.push(`${category}-${id}`)
              }
            }
          }
          const client = await pool.connect()
          try {
            await client.query('BEGIN')
            if (upKeys.length) {
              await client.query(
                `INSERT INTO ${table} (session, key, value, updated_at)
                 SELECT $1, k, v::jsonb, now() FROM unnest($2::text[], $3::text[]) AS t(k, v)
                 ON CONFLICT (session, key) DO UPDATE SET value = EXCLUDED.value, updated_at = now()`,
                [session, upKeys, upValues])
            }
            if (delKeys.length) {
              await client.query(`DELETE FROM ${table} WHERE session = $1 AND key = ANY($2)`, [session, delKeys])
            }
            await client.query('COMMIT')
          } catch (err) {
            await client.query('ROLLBACK').catch(() => {})
            throw err
          } finally {
            client.release()
          }
        }
      }
    },
    saveCreds: () => pool.query(
      `INSERT INTO ${table} (session, key, value, updated_at) VALUES ($1, 'creds', $2::jsonb, now())
       ON CONFLICT (session, key) DO UPDATE SET value = EXCLUDED.value, updated_at = now()`,
      [session, toJson(creds)])
  }
}

module.exports = { usePostgresAuthState }
