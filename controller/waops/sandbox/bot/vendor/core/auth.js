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

async function useMultiFileAuthState (folder) {
  const writeData = (data, file) =>
    writeFile(join(folder, fixFileName(file)), JSON.stringify(data, BufferJSON.replacer))
  const readData = async (file) => {
    try {
      return JSON.parse(await readFile(join(folder, fixFileName(file)), { encoding: 'utf-8' }), BufferJSON.reviver)
    } catch {
      return null // Baileys' behaviour: an unreadable file is the same as no file
    }
  }
  const removeData = async (file) => {
    try { await unlink(join(folder, fixFileName(file))) } catch {}
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
