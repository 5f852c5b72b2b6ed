package main

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshward/meshward/cmd/meshward/internal/config"
	"github.com/meshward/meshward/cmd/meshward/internal/detect"
	"github.com/meshward/meshward/cmd/meshward/internal/kube"
	"github.com/meshward/meshward/cmd/meshward/internal/quarantine"
	"github.com/meshward/meshward/extauthz/audit"
)

// newDetector builds the detection rules' detector: its events go to the
// audit log, and a rule with quarantine: enforce edits the same state file
// as `meshward quarantine` (the quarantine watch then applies and audits
// it, by "detector"). nil without rules.
func newDetector(cfg *config.Config, kq *kube.Editor, log *slog.Logger, reg prometheus.Registerer, al *audit.Logger) (*detect.Detector, error) {
	if len(cfg.Detection.Rules) == 0 {
		return nil, nil
	}
	opts := []detect.Option{detect.WithLogger(log), detect.WithRegisterer(reg), detect.WithEvents(al)}
	check := func(id string) error {
		// Only a SPIFFE ID: a principal that happens to be an
		// agent's name must not resolve to that agent.
		if !strings.HasPrefix(id, "spiffe://") {
			return errors.New("not a SPIFFE ID")
		}
		_, err := resolveIdentity(cfg, id)
		return err
	}
	switch path := cfg.QuarantineFile(); {
	case kq != nil:
		// Kubernetes mode: the MeshAgents serving the identity get
		// spec.quarantine, which every replica applies.
		opts = append(opts, detect.WithQuarantiner(func(id, reason string) (bool, error) {
			if err := check(id); err != nil {
				return false, err
			}
			ctx, cancel := context.WithTimeout(context.Background(), kubeEditTimeout)
			defer cancel()
			_, err := kq.Quarantine(ctx, id, reason, detect.By, time.Now())
			if errors.Is(err, quarantine.ErrNoChange) {
				return false, nil
			}
			return err == nil, err
		}))
	case path != "":
		opts = append(opts, detect.WithQuarantiner(detect.StateFile(path, check, time.Now)))
	}
	return detect.New(cfg.Detection, opts...)
}
