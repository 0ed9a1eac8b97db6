package main

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/spf13/cobra"
)

func init() { registerGroup(addCheckListCommand) }

// checkDef is one check of cli.md §5.2.
type checkDef struct {
	id, desc string
	run      func(c *checker) checkResult
}

type checkSection struct {
	name   string
	checks []checkDef
}

// checkSections lists every check in execution order (cli.md §5.2).
func checkSections() []checkSection {
	return []checkSection{
		{"Configuration checks", []checkDef{
			{"keyd-config-well-formed", "keyd configuration is well-formed", (*checker).keydConfig},
			{"certd-config-well-formed", "certd configuration is well-formed", (*checker).certdConfig},
			{"tpmd-config-well-formed", "tpmd configuration is well-formed", (*checker).tpmdConfig},
			{"identityd-config-well-formed", "identityd configuration is well-formed", (*checker).identitydConfig},
			{"configs-up-to-date", "daemon configurations up-to-date with config.toml", (*checker).configsUpToDate},
			{"hostname", "identityd config toml file specifies a valid hostname", (*checker).hostnameCheck},
			{"aziot-version", "aziot-identity-service package is up-to-date", (*checker).aziotVersion},
			{"host-local-time", "host time is close to reference time", (*checker).hostLocalTime},
			{"identity-certificate-expiry", "production readiness: identity certificates expiry", (*checker).identityCertExpiry},
			{"est-identity-and-bootstrap-certificate-expiry", "production readiness: EST identity and bootstrap certificates expiry", (*checker).estCertExpiry},
			{"local-ca-certificate-expiry", "production readiness: Local CA certificates expiry", (*checker).localCAExpiry},
			{"certs-preloaded", "preloaded certificates are valid", (*checker).certsPreloaded},
			{"keyd-running", "keyd is running", (*checker).keydRunningCheck},
			{"certd-running", "certd is running", (*checker).certdRunningCheck},
			{"tpmd-running", "tpmd is running", (*checker).tpmdRunningCheck},
			{"identityd-running", "identityd is running", (*checker).identitydRunningCheck},
			{"certs-read", "read all preloaded certificates from the Certificates Service", (*checker).certsRead},
			{"key-pairs-read", "read all preloaded key pairs from the Keys Service", (*checker).keyPairsRead},
			{"est-server-https", "check all EST server URLs utilize HTTPS", (*checker).estServerHTTPS},
			{"certs-match-private-keys", "ensure all preloaded certificates match preloaded private keys with the same ID", (*checker).certsMatchKeys},
		}},
		{"Connectivity checks", []checkDef{
			{"host-connect-iothub-amqp", "host can connect to and perform TLS handshake with iothub AMQP port", (*checker).hubAMQP},
			{"host-connect-iothub-https", "host can connect to and perform TLS handshake with iothub HTTPS / WebSockets port", (*checker).hubHTTPS},
			{"host-connect-iothub-mqtt", "host can connect to and perform TLS handshake with iothub MQTT port", (*checker).hubMQTT},
			{"host-connect-dps-endpoint", "host can connect to and perform TLS handshake with DPS endpoint", (*checker).dpsEndpoint},
		}},
	}
}

func addCheckListCommand(root *cobra.Command, a *app) {
	var output string
	cmd := &cobra.Command{
		Use:   "check-list",
		Short: "List the checks that `aziotctl check` runs",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			switch output {
			case "text":
				fmt.Fprint(a.stdout, checkListText())
			case "json":
				fmt.Fprint(a.stdout, checkListJSON())
			default:
				return usageError{fmt.Errorf("invalid value '%s' for '--output <OUTPUT>': expected text or json", output)}
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text or json")
	_ = cmd.RegisterFlagCompletionFunc("output", cobra.FixedCompletions([]string{"text", "json"}, cobra.ShellCompDirectiveNoFileComp))
	root.AddCommand(cmd)
}

func checkListText() string {
	secs := checkSections()
	w1, w2 := len("CATEGORY"), len("ID")
	for _, s := range secs {
		w1 = max(w1, len(s.name))
		for _, c := range s.checks {
			w2 = max(w2, len(c.id))
		}
	}
	var b strings.Builder
	row := func(a, b2, c string) string { return fmt.Sprintf("%-*s%-*s%s\n", w1+1, a, w2+1, b2, c) }
	b.WriteString(row("CATEGORY", "ID", "DESCRIPTION"))
	b.WriteString("\n")
	for _, s := range secs {
		for _, c := range s.checks {
			b.WriteString(row(s.name, c.id, c.desc))
		}
		b.WriteString("\n")
	}
	return b.String()
}

// checkListJSON has no trailing newline, as upstream's.
func checkListJSON() string {
	type item struct {
		ID          string `json:"id"`
		Description string `json:"description"`
	}
	out := map[string][]item{}
	for _, s := range checkSections() {
		for _, c := range s.checks {
			out[s.name] = append(out[s.name], item{c.id, c.desc})
		}
	}
	b, _ := json.Marshal(out)
	return string(b)
}
