package model

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"path/filepath"
)

// OnnxGoldenTolerance bounds |onnxruntime backend's score - onnxruntime-in-
// Python's score| on a golden row. Both run the very same onnxruntime library
// on the same float32 inputs, so they agree exactly in practice; 1e-6 allows
// for nothing but a different summation order. The native backend is held to
// NativeGoldenTolerance instead.
const OnnxGoldenTolerance = 1e-6

// GoldenRow is one line of golden.jsonl.
type GoldenRow struct {
	Row      int       `json:"row"`
	Case     string    `json:"case"`
	Feature  string    `json:"feature,omitempty"`
	Query    *int64    `json:"query,omitempty"`
	Features []float32 `json:"-"`
	// LGBMScore is LightGBM's float64 score, the reference.
	LGBMScore float64 `json:"lgbm_score"`
	// ONNXScore is onnxruntime's float32 score from Python.
	ONNXScore float32 `json:"onnx_score"`
}

// ReadGolden reads dir/golden.jsonl (within the default limits); null
// feature values are NaN (missing).
func ReadGolden(dir string, nFeatures int) ([]GoldenRow, error) {
	raw, err := readVersionFile(dir, GoldenJSONL, MaxGoldenBytes)
	if err != nil {
		return nil, err
	}
	return parseGolden(filepath.Join(dir, GoldenJSONL), raw, nFeatures)
}

func parseGolden(path string, raw []byte, nFeatures int) ([]GoldenRow, error) {
	var rows []GoldenRow
	scanner := bufio.NewScanner(bytes.NewReader(raw))
	scanner.Buffer(make([]byte, 1<<20), 1<<24)
	for line := 1; scanner.Scan(); line++ {
		var rec struct {
			GoldenRow
			Features []*float64 `json:"features"`
		}
		if err := json.Unmarshal(scanner.Bytes(), &rec); err != nil {
			return nil, fmt.Errorf("%s:%d: %w", path, line, err)
		}
		if len(rec.Features) != nFeatures {
			return nil, fmt.Errorf("%s:%d: %d feature values, the model has %d", path, line, len(rec.Features), nFeatures)
		}
		row := rec.GoldenRow
		row.Features = make([]float32, nFeatures)
		for i, v := range rec.Features {
			if v == nil {
				row.Features[i] = float32(math.NaN())
			} else {
				row.Features[i] = float32(*v)
			}
		}
		rows = append(rows, row)
	}
	if err := scanner.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(rows) == 0 {
		return nil, fmt.Errorf("%s: no golden rows", path)
	}
	return rows, nil
}

// GoldenReport says how far a scorer is from the golden scores.
type GoldenReport struct {
	Rows          int
	MaxDiffONNX   float64 // largest |score - onnx_score|
	MaxDiffLGBM   float64 // largest |score - lgbm_score|
	Scores        []float32
	FirstMismatch int // index of the first row over tolerance to onnx_score, or -1
	// FirstLGBMMismatch is the first row over the LightGBM tolerance, or -1.
	FirstLGBMMismatch int
}

// ScoreGolden scores every golden row in one batch and compares with the
// onnxruntime and LightGBM scores recorded at export.
func ScoreGolden(scorer Scorer, rows []GoldenRow, nFeatures int, tolerance, lgbmTolerance float64) (GoldenReport, error) {
	batch := make([]float32, 0, len(rows)*nFeatures)
	for _, r := range rows {
		batch = append(batch, r.Features...)
	}
	scores := make([]float32, len(rows))
	if err := scorer.Score(batch, len(rows), scores); err != nil {
		return GoldenReport{}, err
	}
	report := GoldenReport{Rows: len(rows), Scores: scores, FirstMismatch: -1, FirstLGBMMismatch: -1}
	for i, r := range rows {
		dONNX := math.Abs(float64(scores[i]) - float64(r.ONNXScore))
		dLGBM := math.Abs(float64(scores[i]) - r.LGBMScore)
		report.MaxDiffONNX = max(report.MaxDiffONNX, dONNX)
		report.MaxDiffLGBM = max(report.MaxDiffLGBM, dLGBM)
		if (dONNX > tolerance || math.IsNaN(dONNX)) && report.FirstMismatch < 0 {
			report.FirstMismatch = i
		}
		if (dLGBM > lgbmTolerance || math.IsNaN(dLGBM)) && report.FirstLGBMMismatch < 0 {
			report.FirstLGBMMismatch = i
		}
	}
	return report, nil
}
