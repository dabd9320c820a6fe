//go:build race

package embedded

// raceDetector says the race detector is on: it slows every step several
// times over, so latency bounds are not checked.
const raceDetector = true
