#include "textflag.h"

// The QuickScorer mask pass over one block of rows, one row per vector lane
// (vQS, Lucchese et al., SIGIR 2016). xs holds the block feature-major
// (xs[f*lanes + lane]); words holds one 64-bit leaf mask per tree and lane
// (words[tree*lanes + lane]). For each feature the splits are walked in
// threshold order while some lane's value is above the threshold (split
// false for that lane): those lanes' words of the split's tree are ANDed with
// its mask. NaN lanes compare false everywhere; the caller applies their
// missing-value splits. Callers pass the block's own feature range, so each
// call is short (assembly is not preempted).

// func qsMaskAVX512(words *uint64, xs *float32, start *int32, threshold *float32, split *qsEntry, nFeatures int)
TEXT ·qsMaskAVX512(SB), NOSPLIT, $0-48
	MOVQ words+0(FP), DI
	MOVQ xs+8(FP), SI
	MOVQ start+16(FP), R8
	MOVQ threshold+24(FP), R9
	MOVQ split+32(FP), R10
	MOVQ nFeatures+40(FP), CX
	TESTQ CX, CX
	JLE  done512

feature512:
	VMOVUPS (SI), Z0
	MOVLQSX (R8), AX
	MOVLQSX 4(R8), BX

split512:
	CMPQ AX, BX
	JGE  next512
	// K1: lanes whose value is above the threshold (ordered: NaN is false).
	VCMPPS.BCST $0x1e, (R9)(AX*4), Z0, K1
	KORTESTW    K1, K1
	JZ          next512
	MOVQ        AX, DX
	SHLQ        $4, DX
	MOVLQSX     8(R10)(DX*1), R11
	SHLQ        $7, R11
	VPBROADCASTQ (R10)(DX*1), Z1
	KSHIFTRW    $8, K1, K2
	VMOVDQU64   (DI)(R11*1), Z2
	VMOVDQU64   64(DI)(R11*1), Z3
	VPANDQ      Z1, Z2, K1, Z2
	VPANDQ      Z1, Z3, K2, Z3
	VMOVDQU64   Z2, (DI)(R11*1)
	VMOVDQU64   Z3, 64(DI)(R11*1)
	INCQ        AX
	JMP         split512

next512:
	ADDQ $64, SI
	ADDQ $4, R8
	DECQ CX
	JNZ  feature512

done512:
	VZEROUPPER
	RET

// func qsMaskAVX2(words *uint64, xs *float32, start *int32, threshold *float32, split *qsEntry, nFeatures int)
TEXT ·qsMaskAVX2(SB), NOSPLIT, $0-48
	MOVQ words+0(FP), DI
	MOVQ xs+8(FP), SI
	MOVQ start+16(FP), R8
	MOVQ threshold+24(FP), R9
	MOVQ split+32(FP), R10
	MOVQ nFeatures+40(FP), CX
	TESTQ CX, CX
	JLE  done2

feature2:
	VMOVUPS (SI), Y0
	MOVLQSX (R8), AX
	MOVLQSX 4(R8), BX

split2:
	CMPQ AX, BX
	JGE  next2
	VBROADCASTSS (R9)(AX*4), Y1
	// Y2: all ones in the lanes whose value is above the threshold.
	VCMPPS      $0x1e, Y1, Y0, Y2
	VMOVMSKPS   Y2, DX
	TESTL       DX, DX
	JZ          next2
	MOVQ        AX, DX
	SHLQ        $4, DX
	MOVLQSX     8(R10)(DX*1), R11
	SHLQ        $6, R11
	VPBROADCASTQ (R10)(DX*1), Y3
	// Widen the lane masks to 64 bits, lanes 0-3 and 4-7.
	VPMOVSXDQ   X2, Y4
	VEXTRACTI128 $1, Y2, X5
	VPMOVSXDQ   X5, Y5
	// The bits to clear: ^mask in the false lanes, then word &^= them.
	VPANDN      Y4, Y3, Y4
	VPANDN      Y5, Y3, Y5
	VPANDN      (DI)(R11*1), Y4, Y6
	VPANDN      32(DI)(R11*1), Y5, Y7
	VMOVDQU     Y6, (DI)(R11*1)
	VMOVDQU     Y7, 32(DI)(R11*1)
	INCQ        AX
	JMP         split2

next2:
	ADDQ $32, SI
	ADDQ $4, R8
	DECQ CX
	JNZ  feature2

done2:
	VZEROUPPER
	RET

// The exit leaves of one block of 16 lanes: per tree, in tree order, each
// lane adds leaf[tree*64 + lowest set bit of its word] to its float32 sum,
// the same additions in the same order as the scalar path.
// func qsLeavesAVX512(words *uint64, leaf *float32, nTrees int, sums *float32)
TEXT ·qsLeavesAVX512(SB), NOSPLIT, $0-32
	MOVQ words+0(FP), DI
	MOVQ leaf+8(FP), SI
	MOVQ nTrees+16(FP), CX
	MOVQ sums+24(FP), DX
	VPXORQ Z0, Z0, Z0   // sums
	VPXORQ Z8, Z8, Z8   // zero
	MOVQ   $63, AX
	VPBROADCASTQ AX, Z9 // 63
	TESTQ CX, CX
	JLE   store

tree:
	VMOVDQU64 (DI), Z2
	VMOVDQU64 64(DI), Z3
	// Lowest set bit: 63 - lzcnt(w & -w).
	VPSUBQ    Z2, Z8, Z4
	VPSUBQ    Z3, Z8, Z5
	VPANDQ    Z2, Z4, Z4
	VPANDQ    Z3, Z5, Z5
	VPLZCNTQ  Z4, Z4
	VPLZCNTQ  Z5, Z5
	VPSUBQ    Z4, Z9, Z4
	VPSUBQ    Z5, Z9, Z5
	KXNORW    K1, K1, K1
	KXNORW    K2, K2, K2
	VGATHERQPS (SI)(Z4*4), K1, Y6
	VGATHERQPS (SI)(Z5*4), K2, Y7
	VINSERTF64X4 $1, Y7, Z6, Z6
	VADDPS    Z6, Z0, Z0
	ADDQ      $128, DI
	ADDQ      $256, SI
	DECQ      CX
	JNZ       tree

store:
	VMOVUPS Z0, (DX)
	VZEROUPPER
	RET
