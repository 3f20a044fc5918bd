package usb

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// FuzzOpenJournal feeds OpenJournal what a crash, a full disk or a hand
// edit can leave in the file: it returns a journal or an error matching
// ErrJournal, never panics, and what it loads is valid, saves and loads
// back identically.
func FuzzOpenJournal(f *testing.F) {
	f.Add([]byte(`[{"bus":2,"address":3,"vendor":18164,"product":1,"interface":0,"driver":"usb-storage"}]`))
	// One file per worker, rewritten for each input: a directory per
	// input would make the fuzzer measure mkdir and rmdir.
	path := filepath.Join(f.TempDir(), "usb-detached.json")
	f.Fuzz(func(t *testing.T, data []byte) {
		require.NoError(t, os.WriteFile(path, data, 0o600))
		j, err := OpenJournal(path)
		if err != nil {
			require.ErrorIs(t, err, ErrJournal)
			require.Nil(t, j)
			return
		}
		entries := j.Entries()
		for _, e := range entries {
			require.NoError(t, e.check())
		}
		j.mu.Lock()
		err = j.saveLocked()
		j.mu.Unlock()
		require.NoError(t, err)
		again, err := OpenJournal(path)
		require.NoError(t, err)
		require.Equal(t, len(entries), len(again.Entries()))
		if len(entries) > 0 {
			require.Equal(t, entries, again.Entries())
		}
	})
}

func TestOpenJournalRefusesBadEntries(t *testing.T) {
	for name, body := range map[string]string{
		"bus 0":        `[{"bus":0,"address":3,"interface":0,"driver":"usb-storage"}]`,
		"address 256":  `[{"bus":1,"address":256,"interface":0,"driver":"usb-storage"}]`,
		"interface -1": `[{"bus":1,"address":3,"interface":-1,"driver":"usb-storage"}]`,
		"no driver":    `[{"bus":1,"address":3,"interface":0}]`,
		"dot-dot":      `[{"bus":1,"address":3,"interface":0,"driver":".."}]`,
		"slash":        `[{"bus":1,"address":3,"interface":0,"driver":"../../../devices/x"}]`,
		"not a list":   `{"bus":1}`,
		"truncated":    `[{"bus":1,"addre`,
	} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "j.json")
			require.NoError(t, os.WriteFile(path, []byte(body), 0o600))
			j, err := OpenJournal(path)
			require.Nil(t, j)
			require.True(t, errors.Is(err, ErrJournal), "%v", err)
			require.ErrorContains(t, err, path)
		})
	}
}
