package wire_test

import "errors"

var errorsIs = errors.Is
