using SecureVmm.Policy.Policy;

namespace SecureVmm.Tests.Policy;

/// <summary>One way to break one rule in the two-desktop example, and the problem it must cause.</summary>
internal sealed record PolicyMutation(Action<PolicyDocument> Apply, PolicyRule Rule, string Path);

internal static class PolicyMutations
{
    private static NetworkDocument Net(PolicyDocument d, int i) => d.Networks![i]!;
    private static VmDocument Vm(PolicyDocument d, int i) => d.Vms![i]!;
    private static FilterRuleDocument Rule(PolicyDocument d, int net, int rule) => d.Networks![net]!.Filter!.Rules![rule]!;

    public static readonly IReadOnlyDictionary<string, PolicyMutation> All = new Dictionary<string, PolicyMutation>
    {
        ["format-version"] = new(d => d.FormatVersion = 2, PolicyRule.BadValue, "$.formatVersion"),
        ["duplicate-vm-name"] = new(d => Vm(d, 1).Name = "secret-desktop", PolicyRule.DuplicateName, "$.vms[1].name"),
        ["bad-vm-name"] = new(d => Vm(d, 1).Name = "Public Desktop", PolicyRule.BadValue, "$.vms[1].name"),
        ["duplicate-network-name"] = new(d => Net(d, 1).Name = "secret-net", PolicyRule.DuplicateName, "$.networks[1].name"),
        ["duplicate-anchor-id"] = new(d => d.TrustAnchors![1]!.Id = "secret-release", PolicyRule.DuplicateName, "$.trustAnchors[1].id"),
        ["unknown-network"] = new(d => Vm(d, 0).Network = "nowhere", PolicyRule.UnknownReference, "$.vms[0].network"),
        ["missing-network"] = new(d => Vm(d, 0).Network = null, PolicyRule.MissingField, "$.vms[0].network"),
        ["network-shared"] = new(d => Vm(d, 1).Network = "secret-net", PolicyRule.NetworkSharedByVms, "$.vms[1].network"),
        ["label-mismatch"] = new(d => Vm(d, 1).Label!.Level = "SECRET", PolicyRule.LabelMismatch, "$.vms[1].label"),
        ["colour-mismatch"] = new(d => Net(d, 0).Label!.Colour = "orange", PolicyRule.LabelMismatch, "$.vms[0].label"),
        ["bad-level"] = new(d => Vm(d, 0).Label!.Level = "SECRETISH", PolicyRule.BadValue, "$.vms[0].label.level"),
        ["shared-tap"] = new(d => Net(d, 1).Backend!.Tap = "svmm-sec0", PolicyRule.SharedHostResource, "$.networks[1].backend.tap"),
        ["shared-bridge"] = new(d => Net(d, 1).Backend!.Bridge = "br-secret", PolicyRule.SharedHostResource, "$.networks[1].backend.bridge"),
        ["shared-netns"] = new(d => Net(d, 1).Backend!.Netns = "secret", PolicyRule.SharedHostResource, "$.networks[1].backend.netns"),
        ["shared-udp-port"] = new(d =>
        {
            Net(d, 0).Backend = new BackendDocument { Type = "udp", Local = "127.0.0.1:5000", Remote = "127.0.0.1:5001" };
            Net(d, 1).Backend = new BackendDocument { Type = "udp", Local = "0.0.0.0:5001", Remote = "127.0.0.1:5002" };
        }, PolicyRule.SharedHostResource, "$.networks[1].backend.local"),
        ["shared-pcap-file"] = new(d =>
        {
            Net(d, 0).Backend = new BackendDocument { Type = "pcap", File = "cap/a.pcap" };
            Net(d, 1).Backend = new BackendDocument { Type = "pcap", File = "cap/../cap/a.pcap" };
        }, PolicyRule.SharedHostResource, "$.networks[1].backend.file"),
        ["pcap-onto-audit-log"] = new(d => Net(d, 0).Backend = new BackendDocument { Type = "pcap", File = "/var/log/securevmm/public-desktop.audit" },
            PolicyRule.SharedHostResource, "$.vms[1].audit.path"),
        ["shared-audit-log"] = new(d => Vm(d, 1).Audit!.Path = "/var/log/securevmm/secret-desktop.audit", PolicyRule.SharedHostResource, "$.vms[1].audit.path"),
        ["audit-onto-image"] = new(d => Vm(d, 0).Audit!.Path = "images/public-desktop.svmi", PolicyRule.SharedHostResource, "$.vms[0].audit.path"),
        ["missing-audit"] = new(d => Vm(d, 0).Audit = null, PolicyRule.MissingField, "$.vms[0].audit"),
        ["memory-over-budget"] = new(d => d.Host!.MemoryBudgetMiB = 1500, PolicyRule.MemoryBudget, "$.vms"),
        ["ephemeral-over-budget"] = new(d => Vm(d, 0).Storage = [new StorageDocument { Name = "scratch", Kind = "ephemeral", SizeMiB = 2000 }], PolicyRule.MemoryBudget, "$.vms"),
        ["budget-over-cap"] = new(d => d.Host!.MemoryBudgetMiB = 100_000, PolicyRule.MemoryOutOfRange, "$.host.memoryBudgetMiB"),
        ["vm-memory-too-small"] = new(d => Vm(d, 0).MemoryMiB = 1, PolicyRule.MemoryOutOfRange, "$.vms[0].memoryMiB"),
        ["vm-memory-too-large"] = new(d => Vm(d, 0).MemoryMiB = 4096, PolicyRule.MemoryOutOfRange, "$.vms[0].memoryMiB"),
        ["unsupported-device"] = new(d => Vm(d, 0).Devices!.Add("floppy"), PolicyRule.UnsupportedDevice, "$.vms[0].devices[5]"),
        ["device-twice"] = new(d => Vm(d, 0).Devices!.Add("vga"), PolicyRule.UnsupportedDevice, "$.vms[0].devices[5]"),
        ["console-without-device"] = new(d => Vm(d, 0).Devices!.Remove("serial"), PolicyRule.UnsupportedDevice, "$.vms[0].console"),
        ["bad-clock"] = new(d => Vm(d, 0).Clock = "wallclock", PolicyRule.BadValue, "$.vms[0].clock"),
        ["signer-not-allowed"] = new(d => Vm(d, 1).Image!.Signers = ["secret-release"], PolicyRule.SignerNotAllowed, "$.vms[1].image.signers[0]"),
        ["unknown-signer"] = new(d => Vm(d, 0).Image!.Signers = ["nobody"], PolicyRule.UnknownReference, "$.vms[0].image.signers[0]"),
        ["no-signers"] = new(d => Vm(d, 0).Image!.Signers = [], PolicyRule.MissingField, "$.vms[0].image.signers"),
        ["sealed-persistent-storage"] = new(d => { Vm(d, 1).Image!.Sealed = true; Vm(d, 1).Storage = [new StorageDocument { Name = "home", Kind = "persistent", Path = "/var/lib/securevmm/public-home.img", SizeMiB = 2048 }]; }, PolicyRule.SealedPersistentStorage, "$.vms[1].storage[0].kind"),
        ["ephemeral-with-path"] = new(d => Vm(d, 0).Storage = [new StorageDocument { Name = "scratch", Kind = "ephemeral", Path = "/tmp/x", SizeMiB = 256 }], PolicyRule.BadValue, "$.vms[0].storage[0].path"),
        ["multicast-mac"] = new(d => Net(d, 0).Mac = "01:00:5e:00:00:01", PolicyRule.BadMacAddress, "$.networks[0].mac"),
        ["malformed-mac"] = new(d => Net(d, 0).Mac = "02:00:00:00:00", PolicyRule.BadMacAddress, "$.networks[0].mac"),
        ["duplicate-mac"] = new(d => Net(d, 1).Mac = "02:5E:C0:00:00:01", PolicyRule.DuplicateMacAddress, "$.networks[1].mac"),
        ["bad-address"] = new(d => Net(d, 0).Addresses![0] = "10.20.0.300/24", PolicyRule.BadIpAddress, "$.networks[0].addresses[0]"),
        ["short-address"] = new(d => Net(d, 0).Addresses![0] = "10.20/24", PolicyRule.BadIpAddress, "$.networks[0].addresses[0]"),
        ["bad-prefix"] = new(d => Net(d, 1).Addresses![1] = "fd00:50::10/129", PolicyRule.BadIpAddress, "$.networks[1].addresses[1]"),
        ["multicast-address"] = new(d => Net(d, 0).Addresses![0] = "224.0.0.1/24", PolicyRule.BadIpAddress, "$.networks[0].addresses[0]"),
        ["cidr-host-bits"] = new(d => Rule(d, 0, 2).Cidr = "10.20.0.1/24", PolicyRule.BadFilterRule, "$.networks[0].filter.rules[2].cidr"),
        ["cidr-wrong-family"] = new(d => Rule(d, 0, 2).Cidr = "fd00::/64", PolicyRule.BadFilterRule, "$.networks[0].filter.rules[2].cidr"),
        ["bad-direction"] = new(d => Rule(d, 0, 0).Direction = "sideways", PolicyRule.BadFilterRule, "$.networks[0].filter.rules[0].direction"),
        ["bad-action"] = new(d => Rule(d, 0, 0).Action = "maybe", PolicyRule.BadFilterRule, "$.networks[0].filter.rules[0].action"),
        ["bad-ethertype"] = new(d => Rule(d, 0, 0).Ethertype = "0x0100", PolicyRule.BadFilterRule, "$.networks[0].filter.rules[0].ethertype"),
        ["protocol-without-ip"] = new(d => Rule(d, 0, 0).Protocol = "tcp", PolicyRule.BadFilterRule, "$.networks[0].filter.rules[0].protocol"),
        ["icmp-on-ipv6"] = new(d => Rule(d, 1, 6).Protocol = "icmp", PolicyRule.BadFilterRule, "$.networks[1].filter.rules[6].protocol"),
        ["ports-without-protocol"] = new(d => Rule(d, 0, 0).Ports = "80", PolicyRule.BadFilterRule, "$.networks[0].filter.rules[0].ports"),
        ["bad-port-range"] = new(d => Rule(d, 0, 2).Ports = "443-80", PolicyRule.BadFilterRule, "$.networks[0].filter.rules[2].ports"),
        ["port-zero"] = new(d => Rule(d, 0, 2).Ports = "0", PolicyRule.BadFilterRule, "$.networks[0].filter.rules[2].ports"),
        ["bad-rate"] = new(d => Rule(d, 0, 6).RateLimit!.PacketsPerSecond = 0, PolicyRule.BadFilterRule, "$.networks[0].filter.rules[6].rateLimit.packetsPerSecond"),
        ["bad-frame-size"] = new(d => Net(d, 0).Filter!.MaxFrameSize = 20, PolicyRule.BadFilterRule, "$.networks[0].filter.maxFrameSize"),
        ["backend-extra-field"] = new(d => Net(d, 0).Backend!.File = "x.pcap", PolicyRule.BadBackend, "$.networks[0].backend.file"),
        ["bad-backend-type"] = new(d => Net(d, 0).Backend!.Type = "vde", PolicyRule.BadBackend, "$.networks[0].backend.type"),
        ["bad-tap-name"] = new(d => Net(d, 0).Backend!.Tap = "a-tap-name-too-long", PolicyRule.BadBackend, "$.networks[0].backend.tap"),
        ["bad-udp-endpoint"] = new(d => Net(d, 0).Backend = new BackendDocument { Type = "udp", Local = "127.0.0.1:70000", Remote = "127.0.0.1:5001" },
            PolicyRule.BadBackend, "$.networks[0].backend.local"),
        ["bad-trust-key"] = new(d => d.TrustAnchors![0]!.PublicKey = "AAAA", PolicyRule.BadTrustAnchor, "$.trustAnchors[0].publicKey"),
        ["key-id-mismatch"] = new(d => d.TrustAnchors![0]!.KeyId = "0000000000000000", PolicyRule.BadTrustAnchor, "$.trustAnchors[0].keyId"),
        ["same-key-twice"] = new(d => d.TrustAnchors![1]!.PublicKey = d.TrustAnchors![0]!.PublicKey, PolicyRule.BadTrustAnchor, "$.trustAnchors[1].publicKey"),
        ["may-sign-for-unknown-vm"] = new(d => d.TrustAnchors![0]!.MaySignFor = ["ghost"], PolicyRule.UnknownReference, "$.trustAnchors[0].maySignFor[0]"),
    };
}
