'use strict'
// The simulator's accelerated clock as last announced by the server (Date.now() until then).
const simClock = {
  anchorSim: null,
  anchorReal: null,
  speed: 1,
  update (snapshot) {
    if (!snapshot || typeof snapshot.now !== 'number') return
    this.anchorSim = snapshot.now * 1000
    this.anchorReal = Date.now()
    this.speed = snapshot.speed || 1
  },
  now () {
    if (this.anchorSim === null) return Date.now()
    return this.anchorSim + (Date.now() - this.anchorReal) * this.speed
  }
}

module.exports = { simClock }
