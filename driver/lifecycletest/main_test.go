package lifecycletest_test

import (
	"testing"

	"github.com/drvkit/drvkit/refcount/leaktest"
)

func TestMain(m *testing.M) { leaktest.Main(m) }
