package overload

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestSplitPartsUsesOnlyIdleCores(t *testing.T) {
	tests := []struct {
		name                      string
		n, minRows, cores, active int
		want                      int
	}{
		{"disabled", 1000, 0, 8, 1, 1},
		{"alone on two cores", 1000, 64, 2, 1, 2},
		{"alone on eight cores", 1000, 64, 8, 1, 8},
		{"too few rows for a second part", 127, 64, 8, 1, 1},
		{"rows for two parts only", 128, 64, 8, 1, 2},
		{"another request holds the other core", 1000, 64, 2, 2, 1},
		{"saturated", 1000, 64, 2, 8, 1},
		{"half the cores busy", 1000, 64, 8, 4, 5},
		{"not counted as active (library use)", 1000, 64, 4, 0, 4},
	}
	for _, tt := range tests {
		if got := splitParts(tt.n, tt.minRows, tt.cores, tt.active); got != tt.want {
			t.Errorf("%s: splitParts(%d, %d, %d, %d): got %d, want %d", tt.name, tt.n, tt.minRows, tt.cores, tt.active, got, tt.want)
		}
	}
}

// TestOpenCallsCountAsBusy: calls still arriving or being answered hold
// cores too, so they count against splitting as scoring requests do.
func TestOpenCallsCountAsBusy(t *testing.T) {
	open := int64(0)
	s := NewScoring(Config{SplitMinRows: 1, Busy: func() int64 { return open }}, NewMetrics(prometheus.NewRegistry()))
	s.active.Store(1)
	for _, tt := range []struct{ open, want int64 }{{0, 1}, {1, 1}, {3, 3}} {
		open = tt.open
		if got := s.busy(); int64(got) != tt.want {
			t.Errorf("open %d, 1 scoring: got busy %d, want %d", tt.open, got, tt.want)
		}
	}
}
