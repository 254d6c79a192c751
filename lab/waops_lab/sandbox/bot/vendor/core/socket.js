'use strict'
// makeWASocket over the simulator's protocol (TCP, one JSON object per line). Log lines, events and
// Boom errors follow Baileys so that a bot, its logs and its auth files look like the real thing.
const net = require('node:net')
const { EventEmitter } = require('node:events')
const { randomBytes } = require('node:crypto')
const { Boom } = require('./boom')
const { simClock } = require('./clock')

const DisconnectReason = {
  connectionClosed: 428,
  connectionLost: 408,
  connectionReplaced: 440,
  timedOut: 408,
  loggedOut: 401,
  badSession: 500,
  restartRequired: 515,
  multideviceMismatch: 411,
  forbidden: 403,
  unavailableService: 503
}
for (const [name, code] of Object.entries(DisconnectReason)) DisconnectReason[code] = name
// proto.WebMessageInfo.StubType, the one value a message that failed to decrypt carries.
const WAMessageStubType = { CIPHERTEXT: 2 }

const MIN_PREKEY_COUNT = 5
// A line whose words changed between majors (tests/contracts checks both against the real releases).
const PREKEYS_UPLOADED = { 6: 'uploaded pre-keys', 7: 'uploaded pre-keys successfully' }
const PAIRING_ALPHABET = '123456789ABCDEFGHJKLMNPQRSTVWXYZ'

const b64 = (buf) => Buffer.from(buf || []).toString('base64')
const jidUser = (jid) => String(jid).split('@')[0].split(':')[0]
const signalAddress = (jid) => `${jidUser(jid)}.0`

function makeEventBuffer () {
  const ee = new EventEmitter()
  ee.setMaxListeners(0)
  const processors = new Set()
  const emit = ee.emit.bind(ee)
  ee.emit = (event, data) => {
    for (const fn of processors) Promise.resolve().then(() => fn({ [event]: data })).catch(() => {})
    return emit(event, data)
  }
  // ev.process(handler): Baileys' batched API, delivered one event at a time here.
  ee.process = (fn) => { processors.add(fn); return () => processors.delete(fn) }
  ee.buffer = () => {}
  ee.flush = () => false
  ee.createBufferedFunction = (fn) => fn
  return ee
}

function parseUrl (value) {
  const url = new URL(value || process.env.WAOPS_SIM_URL || 'tcp://127.0.0.1:7800')
  return { host: url.hostname.replace(/^\[|\]$/g, ''), port: Number(url.port || 7800) }
}

function defaultLogger () {
  return require('pino')({ level: 'info' })
}

// Stream errors -> Boom, as Baileys' getErrorCodeFromStreamError does.
function streamErrorToBoom (node) {
  const child = Array.isArray(node.content) ? node.content[0] : undefined
  let reason = child?.tag || 'unknown'
  let statusCode = Number(node.attrs?.code || (reason === 'conflict' ? 440 : 500))
  if (child?.attrs?.type === 'device_removed') statusCode = DisconnectReason.loggedOut
  if (statusCode === DisconnectReason.restartRequired) reason = 'restart required'
  return new Boom(`Stream Errored (${reason})`, { statusCode, data: node })
}

function libsignalBadMac () {
  const err = new Error('Bad MAC')
  err.stack = 'Error: Bad MAC\n' +
    '    at Object.verifyMAC (/node_modules/libsignal/src/crypto.js:87:15)\n' +
    '    at SessionCipher.doDecryptWhisperMessage (/node_modules/libsignal/src/session_cipher.js:250:16)\n' +
    '    at async SessionCipher.decryptWithSessions (/node_modules/libsignal/src/session_cipher.js:151:29)'
  return err
}

function sessionRecord (counter) {
  const baseKey = b64(randomBytes(33))
  return {
    _sessions: {
      [baseKey]: {
        registrationId: randomBytes(2).readUInt16BE() & 16383,
        currentRatchet: { ephemeralKeyPair: { pubKey: b64(randomBytes(33)), privKey: b64(randomBytes(32)) }, rootKey: b64(randomBytes(32)), previousCounter: 0 },
        indexInfo: { baseKey, baseKeyType: 2, closed: -1, used: Date.now(), created: Date.now(), remoteIdentityKey: b64(randomBytes(33)) },
        chains: { [b64(randomBytes(33))]: { chainKey: { counter, key: b64(randomBytes(32)) }, chainType: 2, messageKeys: {} } }
      }
    },
    version: 'v1'
  }
}

// The receiving chain counter of a stored session record (the simulator's "ratchet position").
function recordCounter (record) {
  const session = record && Object.values(record._sessions || {})[0]
  const chain = session && Object.values(session.chains || {})[0]
  return chain ? chain.chainKey.counter : null
}

function setRecordCounter (record, counter) {
  const session = Object.values(record._sessions)[0]
  Object.values(session.chains)[0].chainKey.counter = counter
  session.indexInfo.used = Date.now()
}

function createSocketFactory (libVersion) {
  const major = Number(libVersion.split('.')[0])
  const preKeyBatch = major >= 7 ? 812 : 30
  const uploadedMsg = PREKEYS_UPLOADED[Math.min(Math.max(major, 6), 7)]

  return function makeWASocket (config = {}) {
    const logger = (config.logger || defaultLogger()).child({ class: 'baileys' })
    const { creds, keys } = config.auth
    const ev = makeEventBuffer()
    const { host, port } = parseUrl(config.waWebSocketUrl)
    const connectTimeoutMs = config.connectTimeoutMs ?? 20000
    const keepAliveIntervalMs = config.keepAliveIntervalMs ?? 30000
    const defaultQueryTimeoutMs = config.defaultQueryTimeoutMs ?? 60000
    const phoneHint = String(config.simPhone || process.env.WAOPS_PHONE || '').replace(/\D/g, '')
    const pending = new Map()
    let closed = false
    let lastDateRecv = Date.now()
    let keepAliveTimer
    let inbox = Promise.resolve() // messages are decrypted one at a time, in order

    const socket = net.connect({ host, port })
    socket.setNoDelay(true)
    const connectTimer = setTimeout(() => end(new Boom('Timed Out', { statusCode: DisconnectReason.timedOut })), connectTimeoutMs)

    const sendNode = (msg) => {
      if (!closed) socket.write(JSON.stringify(msg) + '\n')
    }
    const query = (msg, timeoutMs = defaultQueryTimeoutMs) => new Promise((resolve, reject) => {
      const id = msg.id || randomBytes(8).toString('hex')
      const timer = setTimeout(() => { pending.delete(id); reject(new Boom('Timed Out', { statusCode: 408 })) }, timeoutMs)
      pending.set(id, { resolve, reject, timer })
      sendNode({ ...msg, id })
    })

    const loggedIn = Boolean(creds.me?.id && creds.account)
    socket.on('connect', () => {
      logger.info('connected to WA')
      if (!loggedIn) {
        logger.info('not logged in, attempting registration...')
      } else {
        logger.info({ node: { tag: 'login', attrs: { username: jidUser(creds.me.id), passive: 'true' } } }, 'logging in...')
      }
      sendNode({
        t: 'hello',
        v: 1,
        library: { name: 'baileys', version: libVersion },
        phone: phoneHint,
        noise: b64(creds.noiseKey.public),
        registrationId: creds.registrationId,
        device: loggedIn ? creds.me.id : null
      })
    })
    let buffered = ''
    socket.on('data', (chunk) => {
      lastDateRecv = Date.now()
      buffered += chunk.toString('utf8')
      let nl
      while ((nl = buffered.indexOf('\n')) >= 0) {
        const line = buffered.slice(0, nl)
        buffered = buffered.slice(nl + 1)
        if (!line.trim()) continue
        let msg
        try { msg = JSON.parse(line) } catch { continue }
        try { onNode(msg) } catch (err) { logger.error({ err }, 'unexpected error in handling frame') }
      }
    })
    socket.on('error', (err) => {
      const statusCode = /^E/.test(err.code || '') || /timed out/i.test(err.message) ? 408 : 500
      end(new Boom(`WebSocket Error (${err.message})`, { statusCode, data: { code: err.code, message: err.message } }))
    })
    socket.on('close', () => end(new Boom('Connection Terminated', { statusCode: DisconnectReason.connectionClosed })))
    process.nextTick(() => ev.emit('connection.update', { connection: 'connecting', receivedPendingNotifications: false, qr: undefined }))

    function onNode (msg) {
      switch (msg.t) {
        case 'qr': {
          const qr = [msg.ref, b64(creds.noiseKey.public), b64(creds.signedIdentityKey.public), creds.advSecretKey].join(',')
          ev.emit('connection.update', { qr })
          break
        }
        case 'qr_end':
          end(new Boom('QR refs attempts ended', { statusCode: DisconnectReason.timedOut }))
          break
        case 'pair_success': {
          const update = {
            me: msg.me,
            account: msg.account,
            platform: msg.platform,
            registered: msg.method === 'code' || Boolean(creds.registered)
          }
          Object.assign(creds, update)
          logger.info({ me: msg.me, platform: msg.platform }, 'pairing configured successfully, expect to restart the connection...')
          ev.emit('creds.update', update)
          ev.emit('connection.update', { isNewLogin: true, qr: undefined })
          break
        }
        case 'success':
          clearTimeout(connectTimer)
          simClock.update(msg.clock)
          onOpen().catch((err) => logger.error({ err }, 'error in opening connection'))
          break
        case 'clock':
          simClock.update(msg.clock)
          break
        case 'prekey_count':
          inbox = inbox.then(() => uploadPreKeysIfRequired(msg.count)).catch((err) => logger.error({ err }, 'error uploading pre-keys'))
          break
        case 'message':
          inbox = inbox.then(() => onMessage(msg)).catch((err) => logger.error({ err }, 'error in handling message'))
          break
        case 'skdm':
          inbox = inbox.then(() => onSenderKeys(msg.items || [])).catch((err) => logger.error({ err }, 'error storing sender keys'))
          break
        case 'stream_error':
          logger.error({ node: msg.node }, 'stream errored out')
          end(streamErrorToBoom(msg.node))
          break
        case 'failure':
          end(new Boom('Connection Failure', { statusCode: Number(msg.attrs?.reason || 500), data: msg.attrs }))
          break
        case 'ack': {
          const waiter = pending.get(msg.id)
          if (!waiter) break
          pending.delete(msg.id)
          clearTimeout(waiter.timer)
          if (msg.error) waiter.reject(new Boom(msg.text || 'Unknown error', { data: msg.error }))
          else waiter.resolve(msg)
          break
        }
        case 'pong':
          break
      }
    }

    async function onOpen () {
      sock.user = { id: creds.me.id, lid: creds.me.lid, name: creds.me.name }
      logger.info('opened connection to WA')
      keepAliveTimer = setInterval(() => {
        if (Date.now() - lastDateRecv > keepAliveIntervalMs + 5000) {
          end(new Boom('Connection was lost', { statusCode: DisconnectReason.connectionLost }))
        } else {
          sendNode({ t: 'ping', id: randomBytes(4).toString('hex') })
        }
      }, keepAliveIntervalMs)
      ev.emit('connection.update', { connection: 'open' })
      if (!creds.myAppStateKeyId) {
        // The phone shares an app-state sync key right after linking.
        const keyId = b64(randomBytes(6))
        await keys.set({ 'app-state-sync-key': { [keyId]: { keyData: randomBytes(32), fingerprint: { rawId: randomBytes(4).readUInt32BE(), currentIndex: 1, deviceIndexes: [0, 1] }, timestamp: Date.now() } } })
        creds.myAppStateKeyId = keyId
        ev.emit('creds.update', { myAppStateKeyId: keyId })
      }
      ev.emit('connection.update', { receivedPendingNotifications: true })
    }

    async function uploadPreKeysIfRequired (count) {
      logger.info(`${count} pre-keys found on server`)
      if (count > MIN_PREKEY_COUNT) return
      const first = creds.nextPreKeyId
      const batch = {}
      for (let i = 0; i < preKeyBatch; i++) batch[first + i] = { private: randomBytes(32), public: randomBytes(32) }
      logger.info({ count: preKeyBatch }, 'uploading pre-keys')
      await keys.set({ 'pre-key': batch })
      const update = { nextPreKeyId: first + preKeyBatch, firstUnuploadedPreKeyId: first + preKeyBatch }
      Object.assign(creds, update)
      ev.emit('creds.update', update)
      await query({ t: 'prekeys_upload', count: preKeyBatch })
      logger.info({ count: preKeyBatch }, uploadedMsg)
    }

    async function onSenderKeys (items) {
      const senderKeys = {}
      const memory = {}
      for (const { group, from } of items) {
        senderKeys[`${group}::${jidUser(from)}::0`] = { senderKeyStates: [{ senderKeyId: randomBytes(4).readUInt32BE(), senderChainKey: { iteration: 0, seed: b64(randomBytes(32)) }, senderSigningKey: { public: b64(randomBytes(33)) } }] }
        memory[group] = { ...(memory[group] || {}), [from]: true }
      }
      await keys.set({ 'sender-key': senderKeys, 'sender-key-memory': memory })
    }

    // What Baileys does with a message it cannot decrypt: it still upserts it, as a stub of type
    // CIPHERTEXT whose parameters carry the decryption error ("Bad MAC", "No session record").
    function undecrypted (key, msg, err) {
      const stub = {
        key,
        messageStubType: WAMessageStubType.CIPHERTEXT,
        messageStubParameters: [err.message],
        messageTimestamp: msg.ts || Math.floor(Date.now() / 1000)
      }
      ev.emit('messages.upsert', { messages: [stub], type: 'notify' })
    }

    async function onMessage (msg) {
      const key = { remoteJid: msg.from, fromMe: false, id: msg.id }
      const address = signalAddress(msg.from)
      const record = (await keys.get('session', [address]))[address]
      const retry = (reason) => sendNode({ t: 'retry', id: msg.id, from: msg.from, reason, count: (msg.retry || 0) + 1 })
      if (msg.pkmsg) {
        if (record) console.log('Closing open session in favor of incoming prekey bundle')
        await keys.set({ session: { [address]: sessionRecord(msg.next) } })
      } else if (!record) {
        const err = new Error('No session record')
        err.name = 'SessionError'
        logger.error({ key, err }, 'failed to decrypt message')
        retry('no_session')
        undecrypted(key, msg, err)
        return
      } else if (recordCounter(record) !== msg.prev) {
        const err = libsignalBadMac()
        console.error('Failed to decrypt message with any known session...')
        console.error('Session error:' + err, err.stack)
        logger.error({ key, err }, 'failed to decrypt message')
        retry('bad_mac')
        undecrypted(key, msg, err)
        return
      } else {
        setRecordCounter(record, msg.next)
        await keys.set({ session: { [address]: record } })
      }
      const message = {
        key,
        message: { conversation: msg.text },
        messageTimestamp: msg.ts || Math.floor(Date.now() / 1000),
        pushName: 'Tester'
      }
      ev.emit('messages.upsert', { messages: [message], type: 'notify' })
    }

    function end (error) {
      if (closed) {
        logger.trace({ trace: error?.stack }, 'connection already closed')
        return
      }
      closed = true
      clearTimeout(connectTimer)
      clearInterval(keepAliveTimer)
      logger.info({ err: error }, 'connection closed')
      for (const [id, waiter] of pending) {
        clearTimeout(waiter.timer)
        waiter.reject(new Boom('Connection Closed', { statusCode: DisconnectReason.connectionClosed }))
        pending.delete(id)
      }
      socket.destroy()
      ev.emit('connection.update', { connection: 'close', lastDisconnect: { error, date: new Date() } })
      ev.removeAllListeners('connection.update')
    }

    const sock = {
      type: 'md',
      ev,
      authState: { creds, keys },
      user: creds.me ? { id: creds.me.id, lid: creds.me.lid, name: creds.me.name } : undefined,
      ws: { close: () => end(new Boom('Connection Closed', { statusCode: DisconnectReason.connectionClosed })), get isOpen () { return !closed } },
      end,
      async requestPairingCode (phoneNumber) {
        let code = ''
        for (const byte of randomBytes(8)) code += PAIRING_ALPHABET[byte % PAIRING_ALPHABET.length]
        creds.pairingCode = code
        ev.emit('creds.update', { pairingCode: code })
        await query({ t: 'pair_code_request', phone: String(phoneNumber).replace(/\D/g, ''), code })
        return code
      },
      async sendMessage (jid, content) {
        const id = '3EB0' + randomBytes(8).toString('hex').toUpperCase()
        const text = content?.text ?? ''
        await query({ t: 'send', id, to: jid, text })
        const msg = { key: { remoteJid: jid, fromMe: true, id }, message: { extendedTextMessage: { text } }, messageTimestamp: Math.floor(Date.now() / 1000), status: 1 }
        ev.emit('messages.upsert', { messages: [msg], type: 'append' })
        return msg
      },
      async sendPresenceUpdate (type, toJid) {
        sendNode({ t: 'presence', type, to: toJid })
      },
      async logout (msg) {
        if (creds.me?.id) await query({ t: 'logout' }, 5000).catch(() => {})
        end(new Boom(msg || 'Intentional Logout', { statusCode: DisconnectReason.loggedOut }))
      },
      waitForConnectionUpdate: (check, timeoutMs = 60000) => new Promise((resolve, reject) => {
        const timer = setTimeout(() => { ev.off('connection.update', listener); reject(new Boom('Timed Out', { statusCode: 408 })) }, timeoutMs)
        const listener = (update) => {
          if (check(update)) { clearTimeout(timer); ev.off('connection.update', listener); resolve(update) }
        }
        ev.on('connection.update', listener)
      })
    }
    return sock
  }
}

module.exports = { createSocketFactory, DisconnectReason, WAMessageStubType }
