package config

import (
	"fmt"
	"maps"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"
)

// AzureResource says where an Azure resource vipswap drives lives, how it
// reaches Azure Resource Manager, and how it confirms a switch (see
// docs/azure.md). Every Azure block has these keys.
type AzureResource struct {
	// Subscription is the subscription's ID.
	Subscription string `yaml:"subscription"`
	// ResourceGroup holds the resource.
	ResourceGroup string `yaml:"resource_group"`
	// Endpoint is Azure Resource Manager's URL; default Azure's public
	// cloud (https://management.azure.com).
	Endpoint string `yaml:"endpoint"`
	// OperationTimeout bounds one write, its long-running operation
	// polled to the end included. Default 5m.
	OperationTimeout time.Duration `yaml:"operation_timeout"`
	// PollEvery is how often an operation is polled when Azure does not
	// say (Retry-After). Default 2s, at least 1s.
	PollEvery time.Duration `yaml:"poll_every"`
	// RetryEvery is how often a change Azure does not show (a write
	// that failed, drift, a VIP that did not converge) is applied again.
	// Default 30s.
	RetryEvery time.Duration `yaml:"retry_every"`
	// Confirm is how vipswap sees a switch happen at the VIP.
	Confirm AzureConfirm `yaml:"confirm"`
}

// AzureConfirm is how a switch is confirmed: by asking the VIP until the
// new slot answers every request of a window.
type AzureConfirm struct {
	// URL is the VIP's test path, which answers naming its slot
	// ("http://20.1.2.3/api/test"). Empty: no confirmation.
	URL string `yaml:"url"`
	// Answers maps a slot to what its instances answer (default the
	// slot's name).
	Answers map[string]string `yaml:"answers"`
	// Window is how many answers in a row must name the new slot.
	// Default 10.
	Window int `yaml:"window"`
	// Every is the pause between requests. Default 200ms.
	Every time.Duration `yaml:"every"`
	// Deadline is how long the VIP has to show a switch. Default 2m.
	Deadline time.Duration `yaml:"deadline"`
}

// AzureLB is an Azure Load Balancer whose probes vipswap flips to swap.
type AzureLB struct {
	AzureResource `yaml:",inline"`
	// Name is the load balancer's name.
	Name string `yaml:"name"`
	// Probes names the probes of the prod and stage rules.
	Probes AzureProbes `yaml:"probes"`
	// Paths maps each slot to the probe request path only its instances
	// answer 200.
	Paths map[string]string `yaml:"paths"`
	// Tag is the tag recording the active slot. Default ActiveSlot.
	Tag string `yaml:"tag"`
	// TagValues maps a slot to the tag's value; default the slot's name.
	TagValues map[string]string `yaml:"tag_values"`
}

// AzureProbes names a load balancer's prod and stage probes.
type AzureProbes struct {
	Prod  string `yaml:"prod"`
	Stage string `yaml:"stage"`
}

// AzureAppGW is an Application Gateway whose routing rules vipswap
// points at a slot's backend pool.
type AzureAppGW struct {
	AzureResource `yaml:",inline"`
	// Name is the gateway's name.
	Name string `yaml:"name"`
	// Rules names the request routing rule of prod and of stage (stage
	// may be empty: the gateway has no stage listener).
	Rules AzureProbes `yaml:"rules"`
	// Pools maps each slot to its backend pool.
	Pools map[string]string `yaml:"pools"`
	// Health is "vipswap" (its own probes, the default) or "appgw" (the
	// gateway's backend health) for the health that refuses a swap.
	Health string `yaml:"health"`
	// HealthEvery is how often the gateway's backend health is read.
	// Default 30s.
	HealthEvery time.Duration `yaml:"health_every"`
}

// AzureFrontDoor is an Azure Front Door (Standard/Premium) origin group
// whose origins' weights vipswap sets per slot (release unit).
type AzureFrontDoor struct {
	AzureResource `yaml:",inline"`
	// Profile is the Front Door profile's name.
	Profile string `yaml:"profile"`
	// OriginGroup is the origin group holding every slot's origins.
	OriginGroup string `yaml:"origin_group"`
	// Origins maps each slot to its origins' names.
	Origins map[string][]string `yaml:"origins"`
}

// shellSpecial are the characters a value may not hold because a dry run
// prints it in an az command inside double quotes (and a path inside
// single quotes within them, as az's --set reads it).
const shellSpecial = "\"'$`\\!"

var azureName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._()-]{0,89}$`)
var azureGUID = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)

// azureResource checks the keys every Azure block has, and fills in their
// defaults.
func (v *validator) azureResource(key string, r *AzureResource) {
	if !azureGUID.MatchString(r.Subscription) {
		v.fail(key+".subscription", fmt.Sprintf("want the subscription's ID (a GUID, az account show --query id), got %q", r.Subscription))
	}
	v.azureName(key+".resource_group", r.ResourceGroup)
	if r.Endpoint != "" {
		u, err := url.Parse(r.Endpoint)
		if err != nil || u.Scheme != "https" || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
			v.fail(key+".endpoint", fmt.Sprintf("want Azure Resource Manager's https URL (such as https://management.usgovcloudapi.net), got %q", r.Endpoint))
		}
	}
	if r.OperationTimeout == 0 {
		r.OperationTimeout = 5 * time.Minute
	}
	if r.PollEvery == 0 {
		r.PollEvery = 2 * time.Second
	}
	if r.RetryEvery == 0 {
		r.RetryEvery = 30 * time.Second
	}
	v.positive(key+".operation_timeout", r.OperationTimeout)
	v.positive(key+".retry_every", r.RetryEvery)
	if r.PollEvery < time.Second {
		v.fail(key+".poll_every", fmt.Sprintf("want at least 1s (Azure's SDK polls no faster), got %v", r.PollEvery))
	}
	c := &r.Confirm
	if c.URL != "" {
		u, err := url.Parse(c.URL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			v.fail(key+".confirm.url", fmt.Sprintf("want the VIP's test URL, such as http://20.1.2.3/api/test, got %q", c.URL))
		}
	}
	for slot := range c.Answers {
		if _, ok := v.c.Slots[slot]; !ok {
			v.fail(key+".confirm.answers."+slot, "no such slot")
		}
	}
	if c.URL != "" {
		// What each slot answers (default its name) must tell them apart:
		// an answer two slots share confirms a switch the old slot still
		// serves.
		answers := map[string]string{}
		for slot := range v.c.Slots {
			answers[slot] = slot
			if a, ok := c.Answers[slot]; ok {
				answers[slot] = a
			}
			if strings.TrimSpace(answers[slot]) == "" {
				v.fail(key+".confirm.answers."+slot, "want what the slot's instances answer, not an empty string (an empty answer would confirm any slot)")
			}
		}
		v.distinctWhy(key+".confirm.answers", "the answer", "the VIP's answers could not tell which one serves (each slot's default answer is its name)", answers)
	}
	if c.Window == 0 {
		c.Window = 10
	}
	if c.Every == 0 {
		c.Every = 200 * time.Millisecond
	}
	if c.Deadline == 0 {
		c.Deadline = 2 * time.Minute
	}
	v.atLeastOne(key+".confirm.window", c.Window)
	v.positive(key+".confirm.every", c.Every)
	v.positive(key+".confirm.deadline", c.Deadline)
}

func (v *validator) azureName(key, name string) {
	if !azureName.MatchString(name) {
		v.fail(key, fmt.Sprintf("want an Azure resource name (letters, digits, . _ ( ) -, at most 90), got %q", name))
	}
}

// everySlot fails key unless m names every slot of the configuration,
// and nothing else.
func (v *validator) everySlot(key, what string, m map[string]string) {
	for _, slot := range slices.Sorted(maps.Keys(v.c.Slots)) {
		if _, ok := m[slot]; !ok {
			v.fail(key, fmt.Sprintf("want %s for every slot; %s has none", what, slot))
		}
	}
	for _, slot := range slices.Sorted(maps.Keys(m)) {
		if _, ok := v.c.Slots[slot]; !ok {
			v.fail(key+"."+slot, "no such slot")
		}
	}
}

// distinct fails key when two slots share a value of m.
func (v *validator) distinct(key, what string, m map[string]string) {
	v.distinctWhy(key, what, "a swap between them would change nothing", m)
}

// distinctWhy is distinct with why it matters.
func (v *validator) distinctWhy(key, what, why string, m map[string]string) {
	owner := map[string]string{}
	for _, slot := range slices.Sorted(maps.Keys(m)) {
		if other, ok := owner[m[slot]]; ok {
			v.fail(key+"."+slot, fmt.Sprintf("slots %s and %s share %s %q: %s", other, slot, what, m[slot], why))
		}
		owner[m[slot]] = slot
	}
}

func (v *validator) azureLB(a *AzureLB) {
	v.azureResource("azure_lb", &a.AzureResource)
	v.azureName("azure_lb.name", a.Name)
	if a.Probes.Prod == "" || a.Probes.Stage == "" || a.Probes.Prod == a.Probes.Stage {
		v.fail("azure_lb.probes", "want prod and stage: the two probes of the prod and stage rules (such as http-probe and http-probe-stage)")
	} else {
		v.azureName("azure_lb.probes.prod", a.Probes.Prod)
		v.azureName("azure_lb.probes.stage", a.Probes.Stage)
	}
	v.everySlot("azure_lb.paths", "a probe request path", a.Paths)
	v.distinct("azure_lb.paths", "the probe path", a.Paths)
	for slot, p := range a.Paths {
		if !strings.HasPrefix(p, "/") || strings.ContainsFunc(p, func(r rune) bool { return r <= ' ' || r == 0x7f }) || strings.ContainsAny(p, shellSpecial) {
			v.fail("azure_lb.paths."+slot, fmt.Sprintf("want a request path starting with / and no spaces, quotes, $, ` or \\, got %q", p))
		}
	}
	if a.Tag == "" {
		a.Tag = "ActiveSlot"
	}
	if len(a.Tag) > 512 || strings.ContainsAny(a.Tag, "<>%&\\?/ "+shellSpecial) || strings.ContainsFunc(a.Tag, func(r rune) bool { return r < ' ' || r == 0x7f }) {
		v.fail("azure_lb.tag", fmt.Sprintf("want a tag name (no < > %% & \\ ? / or space), got %q", a.Tag))
	}
	for slot, t := range a.TagValues {
		if _, ok := v.c.Slots[slot]; !ok {
			v.fail("azure_lb.tag_values."+slot, "no such slot")
		}
		if len(t) > 256 {
			v.fail("azure_lb.tag_values."+slot, "a tag value has at most 256 characters")
		}
		if strings.ContainsFunc(t, func(r rune) bool { return r <= ' ' || r == 0x7f }) || strings.ContainsAny(t, shellSpecial) {
			// A dry run prints it in an az command to paste.
			v.fail("azure_lb.tag_values."+slot, fmt.Sprintf("want a tag value with no spaces, quotes, $, ` or \\, got %q", t))
		}
	}
	tags := map[string]string{}
	for slot := range v.c.Slots {
		tags[slot] = slot
		if t, ok := a.TagValues[slot]; ok {
			tags[slot] = t
		}
	}
	v.distinctWhy("azure_lb.tag_values", "the tag value", "the tag could not say which one is live (each slot's default value is its name)", tags)
}

func (v *validator) azureAppGW(a *AzureAppGW) {
	v.azureResource("azure_appgw", &a.AzureResource)
	v.azureName("azure_appgw.name", a.Name)
	if a.Rules.Prod == "" || a.Rules.Prod == a.Rules.Stage {
		v.fail("azure_appgw.rules", "want prod (and stage, if the gateway has a stage listener): the request routing rules that send to a slot's pool")
	} else {
		v.azureName("azure_appgw.rules.prod", a.Rules.Prod)
		if a.Rules.Stage != "" {
			v.azureName("azure_appgw.rules.stage", a.Rules.Stage)
		}
	}
	for slot, pool := range a.Pools {
		v.azureName("azure_appgw.pools."+slot, pool)
	}
	v.everySlot("azure_appgw.pools", "a backend pool", a.Pools)
	v.distinct("azure_appgw.pools", "the backend pool", a.Pools)
	switch a.Health {
	case "":
		a.Health = "vipswap"
	case "vipswap", "appgw":
	default:
		v.fail("azure_appgw.health", fmt.Sprintf("want vipswap or appgw, got %q", a.Health))
	}
	if a.HealthEvery == 0 {
		a.HealthEvery = 30 * time.Second
	}
	v.positive("azure_appgw.health_every", a.HealthEvery)
}

func (v *validator) azureFrontDoor(a *AzureFrontDoor) {
	v.azureResource("azure_frontdoor", &a.AzureResource)
	v.azureName("azure_frontdoor.profile", a.Profile)
	v.azureName("azure_frontdoor.origin_group", a.OriginGroup)
	owner := map[string]string{}
	for _, slot := range slices.Sorted(maps.Keys(v.c.Slots)) {
		if len(a.Origins[slot]) == 0 {
			v.fail("azure_frontdoor.origins", fmt.Sprintf("want the origins of every slot; %s has none", slot))
		}
	}
	for _, slot := range slices.Sorted(maps.Keys(a.Origins)) {
		if _, ok := v.c.Slots[slot]; !ok {
			v.fail("azure_frontdoor.origins."+slot, "no such slot")
		}
		for _, o := range a.Origins[slot] {
			v.azureName("azure_frontdoor.origins."+slot, o)
			if other, ok := owner[o]; ok {
				v.fail("azure_frontdoor.origins."+slot, fmt.Sprintf("origin %s is also %s's: each origin belongs to one slot", o, other))
			}
			owner[o] = slot
		}
	}
}

// azure checks the Azure blocks: at most one (each drives prod's whole
// routing).
func (v *validator) azure() {
	var set []string
	if v.c.AzureLB != nil {
		set = append(set, "azure_lb")
		v.azureLB(v.c.AzureLB)
	}
	if v.c.AzureAppGW != nil {
		set = append(set, "azure_appgw")
		v.azureAppGW(v.c.AzureAppGW)
	}
	if v.c.AzureFrontDoor != nil {
		set = append(set, "azure_frontdoor")
		v.azureFrontDoor(v.c.AzureFrontDoor)
	}
	if len(set) > 1 {
		v.fail(set[1], fmt.Sprintf("drive one Azure load balancer, not %s: each routes the whole of prod", strings.Join(set, " and ")))
	}
}
