package cli

import (
	"fmt"
	"io"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/keyward/keyward/api"
	"github.com/spf13/cobra"
)

func webhookCmd(e *env) *cobra.Command {
	c := &cobra.Command{Use: "webhook", Short: "Manage webhook endpoints and their deliveries (admin)"}

	var events []string
	var description string
	add := &cobra.Command{
		Use:   "add URL --events TYPE[,TYPE…]",
		Short: "Add an endpoint; prints its id and its whsec_ signing secret (shown once)",
		Long: "Add an endpoint that receives the events committed from now on, signed with the\n" +
			"Standard Webhooks scheme. --events takes event types, <group>.* (e.g. license.*)\n" +
			"or * for every type; `keyward webhook event-types` lists them. The signing\n" +
			"secret is printed once: store it in the receiver's configuration now.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var out api.WebhookWithSecret
			req := map[string]any{"url": args[0], "events": events, "description": description}
			if err := e.client().do(e.ctx, "POST", "/v1/webhooks", req, &out); err != nil {
				return err
			}
			return e.print(out, func(w io.Writer) {
				fmt.Fprintf(w, "id:\t%s\nurl:\t%s\nevents:\t%s\nsecret (shown once):\t%s\n",
					out.ID, out.URL, strings.Join(out.Events, ","), out.Secret)
			})
		},
	}
	add.Flags().StringSliceVar(&events, "events", nil, "event types to receive, comma-separated (required)")
	add.Flags().StringVar(&description, "description", "", "what the endpoint is for")
	_ = add.MarkFlagRequired("events")

	var all bool
	list := &cobra.Command{
		Use: "list", Short: "List webhook endpoints", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			path := "/v1/webhooks"
			if all {
				path += "?all=true"
			}
			var out struct {
				Webhooks []api.WebhookEndpoint `json:"webhooks"`
			}
			if err := e.client().do(e.ctx, "GET", path, nil, &out); err != nil {
				return err
			}
			return e.print(out.Webhooks, func(w io.Writer) { webhookTable(w, out.Webhooks) })
		},
	}
	list.Flags().BoolVar(&all, "all", false, "include removed endpoints")

	show := &cobra.Command{
		Use: "show ID", Short: "Show a webhook endpoint", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var ep api.WebhookEndpoint
			if err := e.client().do(e.ctx, "GET", "/v1/webhooks/"+url.PathEscape(args[0]), nil, &ep); err != nil {
				return err
			}
			return e.print(ep, func(w io.Writer) { webhookTable(w, []api.WebhookEndpoint{ep}) })
		},
	}

	var reason string
	remove := &cobra.Command{
		Use: "remove ID", Short: "Remove an endpoint: pending deliveries cancelled, secrets erased, log kept", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var ep api.WebhookEndpoint
			if err := e.client().do(e.ctx, "DELETE", "/v1/webhooks/"+url.PathEscape(args[0]), map[string]string{"reason": reason}, &ep); err != nil {
				return err
			}
			return e.print(ep, func(w io.Writer) { webhookTable(w, []api.WebhookEndpoint{ep}) })
		},
	}
	remove.Flags().StringVar(&reason, "reason", "", "why")

	stateCmd := func(action, short string) *cobra.Command {
		var reason string
		cmd := &cobra.Command{
			Use: action + " ID", Short: short, Args: cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				var ep api.WebhookEndpoint
				path := "/v1/webhooks/" + url.PathEscape(args[0]) + "/" + action
				if err := e.client().do(e.ctx, "POST", path, map[string]string{"reason": reason}, &ep); err != nil {
					return err
				}
				return e.print(ep, func(w io.Writer) { webhookTable(w, []api.WebhookEndpoint{ep}) })
			},
		}
		cmd.Flags().StringVar(&reason, "reason", "", "why")
		return cmd
	}

	var grace string
	rotate := &cobra.Command{
		Use:   "rotate-secret ID [--grace 24h]",
		Short: "Give an endpoint a new signing secret (shown once); the old one also signs for --grace",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var out api.WebhookWithSecret
			path := "/v1/webhooks/" + url.PathEscape(args[0]) + "/rotate-secret"
			if err := e.client().do(e.ctx, "POST", path, map[string]string{"grace": grace}, &out); err != nil {
				return err
			}
			return e.print(out, func(w io.Writer) {
				fmt.Fprintf(w, "id:\t%s\nsecret (shown once):\t%s\n", out.ID, out.Secret)
				if out.PreviousSecretExpiresAt != nil {
					fmt.Fprintf(w, "old secret also signs until:\t%s\n", out.PreviousSecretExpiresAt.Format(time.RFC3339))
				}
			})
		},
	}
	rotate.Flags().StringVar(&grace, "grace", "24h", "how long deliveries also carry the old secret's signature (0s = none)")

	var status string
	var limit int
	deliveries := &cobra.Command{
		Use:   "deliveries [ENDPOINT_ID] [--status failed]",
		Short: "Show the delivery log, newest first",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			q := url.Values{}
			if len(args) == 1 {
				q.Set("endpoint", args[0])
			}
			if status != "" {
				q.Set("state", status)
			}
			q.Set("limit", strconv.Itoa(limit))
			var out struct {
				Deliveries []api.WebhookDelivery `json:"deliveries"`
			}
			if err := e.client().do(e.ctx, "GET", "/v1/webhooks/deliveries?"+q.Encode(), nil, &out); err != nil {
				return err
			}
			return e.print(out.Deliveries, func(w io.Writer) { deliveryTable(w, out.Deliveries) })
		},
	}
	deliveries.Flags().StringVar(&status, "status", "", "only deliveries in this state: pending, succeeded, failed or cancelled")
	deliveries.Flags().IntVar(&limit, "limit", 100, "at most this many (1-1000)")

	replay := &cobra.Command{
		Use: "replay DELIVERY_ID", Short: "Send a finished delivery again (same webhook-id, fresh attempts)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var d api.WebhookDelivery
			path := "/v1/webhooks/deliveries/" + url.PathEscape(args[0]) + "/replay"
			if err := e.client().do(e.ctx, "POST", path, nil, &d); err != nil {
				return err
			}
			return e.print(d, func(w io.Writer) { deliveryTable(w, []api.WebhookDelivery{d}) })
		},
	}

	eventTypes := &cobra.Command{
		Use: "event-types", Short: "List the event types endpoints can subscribe to", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var out struct {
				EventTypes []string `json:"event_types"`
			}
			if err := e.client().do(e.ctx, "GET", "/v1/webhooks/event-types", nil, &out); err != nil {
				return err
			}
			return e.print(out.EventTypes, func(w io.Writer) {
				for _, t := range out.EventTypes {
					fmt.Fprintln(w, t)
				}
			})
		},
	}

	c.AddCommand(add, list, show, remove,
		stateCmd("enable", "Enable a disabled endpoint (it receives events committed from now on)"),
		stateCmd("disable", "Disable an endpoint; its pending deliveries are cancelled"),
		rotate, deliveries, replay, eventTypes)
	return c
}

func webhookTable(w io.Writer, eps []api.WebhookEndpoint) {
	fmt.Fprintln(w, "ID\tSTATE\tURL\tEVENTS\tCREATED")
	for _, ep := range eps {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", ep.ID, ep.State, ep.URL, strings.Join(ep.Events, ","), ep.CreatedAt.Format(time.RFC3339))
	}
}

func deliveryTable(w io.Writer, ds []api.WebhookDelivery) {
	fmt.Fprintln(w, "ID\tENDPOINT\tEVENT\tTYPE\tSTATE\tATTEMPTS\tLAST STATUS\tNEXT ATTEMPT\tLAST ERROR")
	for _, d := range ds {
		status, next := "-", "-"
		if d.LastStatus != 0 {
			status = strconv.Itoa(d.LastStatus)
		}
		if d.NextAttemptAt != nil {
			next = d.NextAttemptAt.Format(time.RFC3339)
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\n", d.ID, d.EndpointID, d.EventID, d.EventType, d.State,
			d.Attempts, status, next, d.LastError)
	}
}
