package metricstest_test

import (
	"fmt"
	"strings"

	"github.com/drvkit/drvkit/metrics/metricstest"
)

func Example() {
	exposition := `# TYPE drvkit_services gauge
drvkit_services{class="USBDevice",state="active"} 2
drvkit_services{class="UserClient",state="active"} 1
`
	f, err := metricstest.Parse(strings.NewReader(exposition))
	if err != nil {
		panic(err)
	}
	fmt.Println(f.Value("drvkit_services", "class=USBDevice", "state=active"))
	fmt.Println(f.Value("drvkit_services", "class=HIDDevice"))
	// Output:
	// 2
	// 0
}
