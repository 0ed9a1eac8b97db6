// Package crossclient holds the cross-client suite of emulator.md §7: the Azure IoT SDK
// for Node (pinned in testdata/package.json and package-lock.json) drives the emulator.
// The emulator binds port 443 on 127.6.0.x addresses, which no other test package uses,
// because the Node clients cannot connect to any other port.
package crossclient
