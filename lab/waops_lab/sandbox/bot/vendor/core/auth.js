'use strict'
// Auth state as Baileys keeps it: creds + a key store; the files variant mirrors useMultiFileAuthState.
const { randomBytes } = require('node:crypto')
const { mkdir, readFile, stat, unlink, writeFile } = require('node:fs/promises')
const { join } = require('node:path')

const BufferJSON = {
  replacer: (_k, value) => {
    if (Buffer.isBuffer(value) || value instanceof Uint8Array || value?.type === 'Buffer') {
      return { type: 'Buffer', data: Buffer.from(value?.data || value).toString('base64') }
    }
    return value
  },
  reviver: (_k, value) => {
    if (typeof value === 'object' && value !== null && (value.buffer === true || value.type === 'Buffer')) {
      const val = value.data || value.value
      return typeof val === 'string' ? Buffer.from(val, 'base64') : Buffer.from(val || [])
    }
    return value
  }
}

const keyPair = () => ({ private: randomBytes(32), public: randomBytes(32) })

const initAuthCreds = () => ({
  noiseKey: keyPair(),
  pairingEphemeralKeyPair: keyPair(),
  signedIdentityKey: keyPair(),
  signedPreKey: { keyPair: keyPair(), signature: randomBytes(64), keyId: 1 },
  registrationId: randomBytes(2).readUInt16BE() & 16383,
  advSecretKey: randomBytes(32).toString('base64'),
  processedHistoryMessages: [],
  nextPreKeyId: 1,
  firstUnuploadedPreKeyId: 1,
  accountSyncCounter: 0,
  accountSettings: { unarchiveChats: false },
  registered: false,
  pairingCode: undefined,
  lastPropHash: undefined,
  routingInfo: undefined
})

// Bounded parallelism: thousands of key files at once would exhaust file descriptors.
async function inChunks (items, size, fn) {
  for (let i = 0; i < items.length; i += size) await Promise.all(items.slice(i, i + size).map(fn))
}

const fixFileName = (file) => file?.replace(/\//g, '__')?.replace(/:/g, '-')

// One operation at a time per file, as Baileys 6.7.x does with a mutex per file: two overlapping
// writeFile calls on creds.json would otherwise interleave and leave it unparseable.
function fileLocks () {
  const tails = new Map()
  return (path, fn) => {
    const run = (tails.get(path) || Promise.resolve()).then(fn, fn)
    const tail = run.catch(() => {})
    tails.set(path, tail)
    tail.then(() => { if (tails.get(path) === tail) tails.delete(path) })
    return run
  }
}

// Module-wide, so a reconnect (a new auth state on the same folder) still waits for the old writes.
const locked = fileLocks()

async function useMultiFileAuthState (folder) {
  const writeData = (data, file) => {
    const path = join(folder, fixFileName(file))
    return locked(path, () => writeFile(path, JSON.stringify(data, BufferJSON.replacer)))
  }
  const readData = async (file) => {
    const path = join(folder, fixFileName(file))
    try {
      return JSON.parse(await locked(path, () => readFile(path, { encoding: 'utf-8' })), BufferJSON.reviver)
    } catch {
      return null // Baileys' behaviour: an unreadable file is the same as no file
    }
  }
  const removeData = (file) => {
    const path = join(folder, fixFileName(file))
    return locked(path, () => unlink(path).catch(() => {}))
  }
  const info = await stat(folder).catch(() => null)
  if (info && !info.isDirectory()) {
    throw new Error(`found something that is not a directory at ${folder}, either delete it or specify a different location`)
  }
  if (!info) await mkdir(folder, { recursive: true })

  const creds = (await readData('creds.json')) || initAuthCreds()
  return {
    state: {
      creds,
      keys: {
        get: async (type, ids) => {
          const data = {}
          await inChunks(ids, 64, async (id) => { data[id] = await readData(`${type}-${id}.json`) })
          return data
        },
        set: async (data) => {
          const tasks = []
          for (const category in data) {
            for (const id in data[category]) {
              const value = data[category][id]
              const file = `${category}-${id}.json`
              tasks.push(() => (value ? writeData(value, file) : removeData(file)))
            }
          }
          await inChunks(tasks, 64, (task) => task())
        }
      }
    },
    saveCreds: () => writeData(creds, 'creds.json')
  }
}

// Real Baileys caches keys in memory; the sandbox has nothing to gain from it.
const makeCacheableSignalKeyStore = (store) => store

module.exports = { BufferJSON, initAuthCreds, useMultiFileAuthState, makeCacheableSignalKeyStore, fixFileName }
