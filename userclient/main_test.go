package userclient

import (
	"fmt"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"github.com/drvkit/drvkit/refcount/leaktest"
)

// Generous: these waits assert that something happens, not how fast.
const cancelWait = 20 * time.Second

// TestMain fails the binary if a test left a goroutine behind. With
// DRVKIT_TEST_LISTEN set, the binary is a bare listener instead (a server
// of another uid, see TestDialChecksServerUID).
func TestMain(m *testing.M) {
	if path := os.Getenv("DRVKIT_TEST_LISTEN"); path != "" {
		ln, err := net.Listen("unix", path)
		if err != nil {
			fmt.Println(err)
			os.Exit(1)
		}
		fmt.Println("ready")
		for {
			nc, err := ln.Accept()
			if err != nil {
				os.Exit(0)
			}
			go io.Copy(io.Discard, nc) // hears what a client sends, answers nothing
		}
	}
	leaktest.Main(m)
}
