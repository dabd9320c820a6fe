package request

import (
	"math"
	"slices"
)

// RankOrder returns candidate indices best first; equal scores keep request
// order, and NaN scores (which a sound model never gives) sort last.
func RankOrder(scores []float32) []int {
	return TopOrder(scores, len(scores))
}

// TopOrder returns the indices of the k best candidates, best first, in the
// order RankOrder gives them. Each candidate is one uint64 whose order is the
// ranking (the score's order-preserving bits above the index), so the sort
// compares plain integers, and no two keys are equal: the result does not
// depend on the sorting algorithm. For k well below n, only a heap of the k
// best is kept in order (O(n log k)).
func TopOrder(scores []float32, k int) []int {
	n := len(scores)
	k = min(k, n)
	keys := make([]uint64, n)
	for i, s := range scores {
		keys[i] = rankKey(s, i)
	}
	if k < n/4 {
		keys = smallestKeys(keys, k)
	}
	slices.Sort(keys)
	order := make([]int, k)
	for r := range order {
		order[r] = int(uint32(keys[r]))
	}
	return order
}

// rankKey orders candidates best first by its value: higher scores give
// smaller keys, equal scores (-0 equals +0) fall back on the index, NaN
// comes after every number.
func rankKey(score float32, index int) uint64 {
	var ordered uint32 // increases with the score
	switch {
	case score != score:
		return math.MaxUint32<<32 | uint64(uint32(index))
	case score == 0:
		ordered = 1 << 31
	default:
		bits := math.Float32bits(score)
		if bits>>31 == 1 {
			ordered = ^bits
		} else {
			ordered = bits | 1<<31
		}
	}
	// ^ordered for the highest number is still below a NaN's all ones: a
	// number's ordered bits are never 0 (that would be a negative NaN).
	return uint64(^ordered)<<32 | uint64(uint32(index))
}

// smallestKeys returns the k smallest keys, in no particular order, keeping
// them in a max-heap over the first k places of keys.
func smallestKeys(keys []uint64, k int) []uint64 {
	if k == 0 {
		return keys[:0]
	}
	heap := keys[:k]
	for i := k/2 - 1; i >= 0; i-- {
		siftDown(heap, i)
	}
	for _, key := range keys[k:] {
		if key < heap[0] {
			heap[0] = key
			siftDown(heap, 0)
		}
	}
	return heap
}

// siftDown restores the max-heap order below i.
func siftDown(heap []uint64, i int) {
	for {
		largest, l, r := i, 2*i+1, 2*i+2
		if l < len(heap) && heap[l] > heap[largest] {
			largest = l
		}
		if r < len(heap) && heap[r] > heap[largest] {
			largest = r
		}
		if largest == i {
			return
		}
		heap[i], heap[largest] = heap[largest], heap[i]
		i = largest
	}
}
