package policy

import (
	"fmt"
	"strings"
)

// diffContext is the number of unchanged lines shown around a change.
const diffContext = 3

// maxDiffCells bounds the work of Diff (lines of a × lines of b); policy
// documents are at most MaxDocumentBytes, far below it.
const maxDiffCells = 4 << 20

// Diff returns a unified diff (as diff -u prints, with 3 lines of context)
// from text a, named aName, to text b, named bName; "" when they are equal.
// Lines are compared exactly; a missing final newline is not marked.
func Diff(aName, bName, a, b string) string {
	if a == b {
		return ""
	}
	x, y := splitLines(a), splitLines(b)
	ops := diffLines(x, y)
	var out strings.Builder
	fmt.Fprintf(&out, "--- %s\n+++ %s\n", aName, bName)
	// Group ops into hunks: runs of changes with up to 2*context equal
	// lines between them.
	for i := 0; i < len(ops); {
		if ops[i].kind == ' ' {
			i++
			continue
		}
		start := max(i-diffContext, 0)
		end := i
		for j := i; j < len(ops); j++ {
			if ops[j].kind != ' ' {
				end = j + 1
				continue
			}
			if j-end >= 2*diffContext {
				break
			}
		}
		end = min(end+diffContext, len(ops))
		h := ops[start:end]
		aStart, bStart := h[0].ai, h[0].bi
		var aLen, bLen int
		for _, o := range h {
			if o.kind != '+' {
				aLen++
			}
			if o.kind != '-' {
				bLen++
			}
		}
		fmt.Fprintf(&out, "@@ -%s +%s @@\n", hunkRange(aStart, aLen), hunkRange(bStart, bLen))
		for _, o := range h {
			out.WriteByte(o.kind)
			out.WriteString(o.text)
			out.WriteByte('\n')
		}
		i = end
	}
	return out.String()
}

// hunkRange formats a hunk's start (0-based index) and length as diff -u does.
func hunkRange(start, n int) string {
	if n == 0 {
		return fmt.Sprintf("%d,0", start)
	}
	if n == 1 {
		return fmt.Sprintf("%d", start+1)
	}
	return fmt.Sprintf("%d,%d", start+1, n)
}

func splitLines(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(strings.TrimSuffix(s, "\n"), "\n")
}

// op is one line of an edit script: ' ' keep, '-' delete from a, '+' add
// from b; ai and bi are the line's (or the next line's) index in a and b.
type op struct {
	kind   byte
	text   string
	ai, bi int
}

// diffLines returns an edit script from x to y that keeps a longest common
// subsequence of lines (dynamic programming after trimming the common
// prefix and suffix). Past maxDiffCells it replaces the middle wholesale.
func diffLines(x, y []string) []op {
	var ops []op
	pre := 0
	for pre < len(x) && pre < len(y) && x[pre] == y[pre] {
		ops = append(ops, op{' ', x[pre], pre, pre})
		pre++
	}
	suf := 0
	for suf < len(x)-pre && suf < len(y)-pre && x[len(x)-1-suf] == y[len(y)-1-suf] {
		suf++
	}
	xm, ym := x[pre:len(x)-suf], y[pre:len(y)-suf]
	n, m := len(xm), len(ym)
	if n*m > maxDiffCells {
		for i, s := range xm {
			ops = append(ops, op{'-', s, pre + i, pre})
		}
		for j, s := range ym {
			ops = append(ops, op{'+', s, pre + n, pre + j})
		}
	} else {
		// lcs[i][j] = length of the LCS of xm[i:] and ym[j:].
		lcs := make([][]int32, n+1)
		for i := range lcs {
			lcs[i] = make([]int32, m+1)
		}
		for i := n - 1; i >= 0; i-- {
			for j := m - 1; j >= 0; j-- {
				if xm[i] == ym[j] {
					lcs[i][j] = lcs[i+1][j+1] + 1
				} else {
					lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
				}
			}
		}
		i, j := 0, 0
		for i < n || j < m {
			switch {
			case i < n && j < m && xm[i] == ym[j]:
				ops = append(ops, op{' ', xm[i], pre + i, pre + j})
				i++
				j++
			case i < n && (j == m || lcs[i+1][j] >= lcs[i][j+1]):
				ops = append(ops, op{'-', xm[i], pre + i, pre + j})
				i++
			default:
				ops = append(ops, op{'+', ym[j], pre + i, pre + j})
				j++
			}
		}
	}
	for k := 0; k < suf; k++ {
		ai, bi := len(x)-suf+k, len(y)-suf+k
		ops = append(ops, op{' ', x[ai], ai, bi})
	}
	return ops
}
