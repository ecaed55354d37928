package rollout

import (
	"fmt"
	"strings"

	"github.com/vipswap/vipswap/wire"
)

// ShadowBounds are what a shadow's figures must keep to pass, as a
// rollout's analysis bounds a canary: the share of compared copies
// answered differently, the target's error rate, its p99 relative to
// prod's over the same requests.
type ShadowBounds struct {
	// MinRequests is how many compared copies a pass needs.
	MinRequests int
	// MaxDifferRate is the highest share of differing answers (0: none).
	MaxDifferRate float64
	// MaxErrorRate is the highest share of copies the target failed, or
	// answered with a 5xx where prod did not.
	MaxErrorRate float64
	// MaxP99Ratio bounds the target's p99 over prod's; 0 is no bound.
	MaxP99Ratio float64
}

// JudgeShadow judges a shadow's figures against b: breach says which bound
// they broke (empty when none); enough reports that they hold the
// requests a pass needs. A breach needs no minimum when the mirror stopped
// by itself or the errors alone exceed what MinRequests would allow.
func JudgeShadow(f *wire.ShadowFigures, b ShadowBounds) (breach string, enough bool) {
	if f == nil {
		return "no figures: this node does not mirror prod's requests", false
	}
	compared := f.Same + f.Differ
	sent := compared + f.Error
	enough = compared >= uint64(max(b.MinRequests, 1))
	figures := fmt.Sprintf("%d differing of %d compared (%.2f%%), %d target errors of %d sent (%.2f%%), p99 prod %.1f ms, target %.1f ms",
		f.Differ, compared, 100*f.DifferRate, f.TargetErrors, sent, 100*f.ErrorRate, f.ProdP99MS, f.TargetP99MS)
	switch {
	case f.Stopped != "":
		return "the mirror stopped: " + f.Stopped, enough
	case b.MaxErrorRate >= 0 && float64(f.TargetErrors) > b.MaxErrorRate*float64(max(sent, uint64(b.MinRequests))):
		// Beyond what even a full sample could allow: a breach now.
		return fmt.Sprintf("target error rate %.2f%% above %.2f%% (%s)", 100*f.ErrorRate, 100*b.MaxErrorRate, figures), enough
	case !enough && float64(f.Differ) > b.MaxDifferRate*float64(max(b.MinRequests, 1)):
		return fmt.Sprintf("differing rate %.2f%% above %.2f%%: already more differing answers than %d copies allow (%s)", 100*f.DifferRate, 100*b.MaxDifferRate, b.MinRequests, figures), enough
	case !enough:
		return "", false
	case f.DifferRate > b.MaxDifferRate:
		return fmt.Sprintf("differing rate %.2f%% above %.2f%% (%s)", 100*f.DifferRate, 100*b.MaxDifferRate, figures), true
	case b.MaxP99Ratio > 0 && f.ProdP99MS > 0 && f.TargetP99MS > b.MaxP99Ratio*f.ProdP99MS:
		return fmt.Sprintf("target p99 %.1f ms above %g times prod's %.1f ms (%s)", f.TargetP99MS, b.MaxP99Ratio, f.ProdP99MS, figures), true
	}
	return "", true
}

// DescribeDiffs lists up to n differing requests in one line:
// "GET /a at $.x (200 vs 200); …".
func DescribeDiffs(samples []wire.ShadowDiff, n int) string {
	var parts []string
	for _, d := range samples[:min(n, len(samples))] {
		parts = append(parts, fmt.Sprintf("%s at %s (%d vs %d)", d.Request, d.Where, d.ProdStatus, d.TargetStatus))
	}
	return strings.Join(parts, "; ")
}
