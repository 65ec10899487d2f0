package metrics

import (
	"reflect"
	"strings"
	"testing"
	"unicode"

	"github.com/p2pd/p2pd"
)

// snake turns a field name into snake_case: WriteTimeouts → write_timeouts.
func snake(s string) string {
	var b strings.Builder
	for i, r := range s {
		if unicode.IsUpper(r) && i > 0 {
			b.WriteByte('_')
		}
		b.WriteRune(unicode.ToLower(r))
	}
	return b.String()
}

func numeric(k reflect.Kind) bool {
	return k >= reflect.Int && k <= reflect.Float64
}

// Every numeric field of PipeStats has a stat of its name, in order, that
// reads that field; a field added to PipeStats fails here until it has one.
func TestStatsCoverPipeStats(t *testing.T) {
	typ := reflect.TypeFor[p2pd.PipeStats]()
	var v p2pd.PipeStats
	rv := reflect.ValueOf(&v).Elem()
	var names []string
	for i, f := range reflect.VisibleFields(typ) {
		if !numeric(f.Type.Kind()) {
			continue
		}
		names = append(names, snake(f.Name))
		fv := rv.FieldByIndex(f.Index)
		if fv.CanInt() {
			fv.SetInt(int64(i + 1))
		} else {
			fv.SetUint(uint64(i + 1))
		}
	}
	var have []string
	for _, s := range stats {
		have = append(have, s.name)
	}
	if !reflect.DeepEqual(names, have) {
		t.Fatalf("stats = %v, want PipeStats' fields %v", have, names)
	}
	for _, f := range reflect.VisibleFields(typ) {
		for _, s := range stats {
			if s.name == snake(f.Name) {
				if got, want := s.value(v), float64(rv.FieldByIndex(f.Index).Convert(reflect.TypeFor[float64]()).Float()); got != want {
					t.Errorf("%s reads %v, want %v (field %s)", s.name, got, want, f.Name)
				}
			}
		}
	}
}

// DaemonStats' own numeric fields (not PipeStats') are Listeners alone,
// which has p2pd_daemon_listeners.
func TestStatsCoverDaemonStats(t *testing.T) {
	for _, f := range reflect.VisibleFields(reflect.TypeFor[p2pd.DaemonStats]()) {
		if len(f.Index) > 1 || !numeric(f.Type.Kind()) {
			continue // PipeStats' fields, promoted
		}
		if f.Name != "Listeners" {
			t.Errorf("DaemonStats.%s has no metric", f.Name)
		}
	}
}
