// A bot written as an ES module, as docs/CONTRACTS.md ("Keep-alive agent") shows it: the agent's ESM
// entry and the socket it is given must type-check together against the real release.
import { makeWASocket, useMultiFileAuthState } from 'baileys'
import { attach } from 'waops-keepalive'

const { state, saveCreds } = await useMultiFileAuthState('auth')
const sock = makeWASocket({ auth: state })
sock.ev.on('creds.update', saveCreds)
const agent = attach(sock, { bot: 'shop', library: { name: 'baileys', version: '0' } })
sock.ev.on('connection.update', ({ connection, lastDisconnect }) => {
  if (connection === 'close' && !agent.shouldReconnect(lastDisconnect)) process.exitCode = 1
})
