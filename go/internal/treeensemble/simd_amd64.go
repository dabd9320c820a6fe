package treeensemble

import "golang.org/x/sys/cpu"

// The CPU's vector extensions, as the OS enables them (x/sys/cpu checks that
// the OS saves the wider registers). The AVX-512 kernels also use VPLZCNTQ
// (AVX512CD); every AVX-512 CPU also runs the AVX2 kernel.
var (
	cpuAVX2   = cpu.X86.HasAVX2
	cpuAVX512 = cpu.X86.HasAVX512F && cpu.X86.HasAVX512CD && cpu.X86.HasAVX2
)

// The kernels are in simd_amd64.s.

//go:noescape
func qsMaskAVX512(words *uint64, xs *float32, start *int32, threshold *float32, split *qsEntry, nFeatures int)

//go:noescape
func qsMaskAVX2(words *uint64, xs *float32, start *int32, threshold *float32, split *qsEntry, nFeatures int)

//go:noescape
func qsLeavesAVX512(words *uint64, leaf *float32, nTrees int, sums *float32)
