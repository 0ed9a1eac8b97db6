// Command aziotctl is the administration CLI of the Azure IoT Identity Service
// replacement (cli.md): config apply / mp, check, check-list and system.
package main

import "os"

func main() {
	os.Exit(run(newApp(), os.Args[1:]))
}
