'use strict'
// The small part of @hapi/boom that bots read: error.output.statusCode, error.data, error.isBoom.
const PHRASES = { 401: 'Unauthorized', 402: 'Payment Required', 403: 'Forbidden', 405: 'Method Not Allowed', 408: 'Request Time-out', 428: 'Precondition Required', 429: 'Too Many Requests', 440: 'Unknown', 500: 'Internal Server Error', 515: 'Unknown' }

class Boom extends Error {
  constructor (message, options = {}) {
    super(message)
    const statusCode = options.statusCode || 500
    this.isBoom = true
    this.data = options.data === undefined ? null : options.data
    this.output = {
      statusCode,
      payload: { statusCode, error: PHRASES[statusCode] || 'Unknown', message },
      headers: {}
    }
  }
}

module.exports = { Boom }
