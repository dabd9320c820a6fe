package treeensemble

import (
	"strings"
	"testing"
)

// A level is refused unless the CPU runs it (an AVX-512 instruction on a
// CPU without it kills the process); auto picks the fastest it runs. The
// CPU's features are set by hand, so every case runs on any machine.
func TestResolveSIMDFollowsTheCPU(t *testing.T) {
	saved512, saved2 := cpuAVX512, cpuAVX2
	t.Cleanup(func() { cpuAVX512, cpuAVX2 = saved512, saved2 })
	tests := []struct {
		avx512, avx2 bool
		level, want  string
		wantErr      string
	}{
		{true, true, SIMDAuto, SIMDAVX512, ""},
		{true, true, "", SIMDAVX512, ""},
		{true, true, SIMDAVX2, SIMDAVX2, ""},
		{true, true, SIMDScalar, SIMDScalar, ""},
		{false, true, SIMDAuto, SIMDAVX2, ""},
		{false, true, SIMDAVX512, "", "avx512: this CPU does not support it (it runs avx2, scalar)"},
		{false, false, SIMDAuto, SIMDScalar, ""},
		{false, false, SIMDAVX2, "", "avx2: this CPU does not support it (it runs scalar)"},
		{false, false, SIMDScalar, SIMDScalar, ""},
		{true, true, "sse4", "", `"sse4": want auto, avx512, avx2 or scalar`},
	}
	for _, tt := range tests {
		cpuAVX512, cpuAVX2 = tt.avx512, tt.avx2
		got, err := ResolveSIMD(tt.level)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("avx512=%v avx2=%v %q: got %q, %v, want an error containing %q", tt.avx512, tt.avx2, tt.level, got, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("avx512=%v avx2=%v %q: got %q, %v, want %q", tt.avx512, tt.avx2, tt.level, got, err, tt.want)
		}
	}
}
