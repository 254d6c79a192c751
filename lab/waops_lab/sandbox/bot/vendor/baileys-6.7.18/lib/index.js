'use strict'
// CommonJS build, as 6.7.18 (the last CommonJS release) ships.
module.exports = require('../../core').forVersion(require('../package.json').version)
