package kinesis

import (
	"os"
	"testing"

	"github.com/idem-run/idem/internal/testsvc"
)

// testEndpoint returns the Kinesis endpoint of the tests (kinesalite on
// loopback, or IDEM_TEST_KINESIS_ENDPOINT).
func testEndpoint(t testing.TB) string { return testsvc.KinesisEndpoint(t) }

func TestMain(m *testing.M) {
	code := m.Run()
	testsvc.StopKinesalite()
	os.Exit(code)
}
