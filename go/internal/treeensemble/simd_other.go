//go:build !amd64

package treeensemble

// Only amd64 has vector kernels; elsewhere every ensemble scores scalar and
// these are never called.
var (
	cpuAVX2   = false
	cpuAVX512 = false
)

func qsMaskAVX512(*uint64, *float32, *int32, *float32, *qsEntry, int) { panic("no AVX-512 kernel") }

func qsMaskAVX2(*uint64, *float32, *int32, *float32, *qsEntry, int) { panic("no AVX2 kernel") }

func qsLeavesAVX512(*uint64, *float32, int, *float32) { panic("no AVX-512 kernel") }
