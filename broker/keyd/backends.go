package keyd

import (
	"github.com/iotbroker/aziot/hsm"
	"github.com/iotbroker/aziot/hsm/file"
)

func fileBackend() hsm.Backend { return file.Store{} }
