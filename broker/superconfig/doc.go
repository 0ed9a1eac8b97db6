// Package superconfig turns the super-config (/etc/aziot/config.toml) into the four
// per-service configuration files, the way `aziotctl config apply` does upstream
// (config.md §2). Everything here is a pure function of its inputs: the caller reads
// the file, looks up the hostname and the service users' uids, and writes the results,
// so the translation can be tested byte for byte against the vectors without root.
package superconfig
