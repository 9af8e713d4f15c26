using System.Globalization;
using System.Text;
using System.Text.Json;
using FsCheck;
using FsCheck.Fluent;
using SecureVmm.Policy.Keys;
using SecureVmm.Policy.Policy;
using Xunit;

namespace SecureVmm.Verification.Policy;

/// <summary>
/// The validator accepts a policy exactly when it satisfies the rules: every generated valid
/// policy passes, and each generated policy with one rule broken is refused with that rule's
/// problem among those reported.
/// </summary>
public class PolicyValidatorProperties
{
    private static readonly Ed25519PublicKey[] Keys = [.. Enumerable.Range(1, 3).Select(i => new Ed25519SecretKey(Enumerable.Repeat((byte)i, 32).ToArray()).PublicKey)];
    private static readonly string[] Levels = [.. PolicyNames.Levels.Keys];
    private static readonly string[] Colours = [.. PolicyNames.Colours.Keys];

    /// <summary>A valid policy built from a seed: 2 to 4 VMs, each on its own network, with random backends, filters and storage.</summary>
    internal static PolicyDocument ValidPolicy(int seed)
    {
        var r = new Random(seed);
        int n = r.Next(2, 5);
        var doc = new PolicyDocument
        {
            FormatVersion = 1,
            Appliance = "gen " + seed.ToString(CultureInfo.InvariantCulture),
            RollbackStateFile = "state/rollback.json",
            Networks = [],
            Vms = [],
            TrustAnchors = [],
        };
        var signerOf = new int[n];
        long total = 0;
        for (int i = 0; i < n; i++)
        {
            string vm = $"vm{i}-{(char)('a' + r.Next(26))}";
            string net = $"net{i}";
            var label = () => new LabelDocument { Level = Levels[i % Levels.Length], Colour = Colours[r.Next(Colours.Length)] };
            var vmLabel = label();
            doc.Networks.Add(new NetworkDocument
            {
                Name = net,
                Label = new LabelDocument { Level = vmLabel.Level, Colour = vmLabel.Colour },
                Backend = (r.Next(4)) switch
                {
                    0 => new BackendDocument { Type = "tap", Tap = $"svmm{i}", Bridge = r.Next(2) == 0 ? $"br{i}" : null, Netns = r.Next(2) == 0 ? $"ns{i}" : null },
                    1 => new BackendDocument { Type = "udp", Local = $"127.0.0.1:{20000 + (2 * i)}", Remote = $"127.0.0.{1 + r.Next(3)}:{20001 + (2 * i)}" },
                    2 => new BackendDocument { Type = "pcap", File = $"captures/{net}.pcap" },
                    _ => new BackendDocument { Type = "none" },
                },
                Mac = $"02:00:00:00:{i:x2}:{r.Next(256):x2}",
                Addresses = [.. Enumerable.Range(0, r.Next(3)).Select(k => (string?)$"10.{i}.{k}.{r.Next(1, 255)}/24")],
                Filter = r.Next(3) == 0 ? null : new FilterDocument
                {
                    DefaultAction = r.Next(2) == 0 ? "deny" : "allow",
                    MaxFrameSize = r.Next(2) == 0 ? null : r.Next(PolicyValidator.MinFrameSize, PolicyValidator.MaxFrameSizeLimit + 1),
                    Rules = [.. Enumerable.Range(0, r.Next(4)).Select(_ => (FilterRuleDocument?)RandomRule(r, i))],
                },
            });
            int memory = r.Next(PolicyValidator.MinVmMemoryMiB, 600);
            bool isSealed = r.Next(2) == 0;
            var storage = new List<StorageDocument?>();
            for (int k = r.Next(3); k > 0; k--)
            {
                bool persistent = !isSealed && r.Next(2) == 0;
                int size = r.Next(1, 64);
                storage.Add(new StorageDocument
                {
                    Name = $"disk{k}",
                    Kind = persistent ? "persistent" : "ephemeral",
                    Path = persistent ? $"disks/{vm}-{k}.img" : null,
                    SizeMiB = size,
                });
                total += persistent ? 0 : size;
            }
            total += memory;
            string console = new[] { "serial", "vga", "none" }[r.Next(3)];
            var devices = new List<string?>();
            foreach (var device in PolicyNames.Devices.Keys)
            {
                if (r.Next(2) == 0 || device == console)
                {
                    devices.Add(device);
                }
            }
            signerOf[i] = r.Next(Keys.Length);
            doc.Vms.Add(new VmDocument
            {
                Name = vm,
                Label = vmLabel,
                MemoryMiB = memory,
                Image = new ImageReferenceDocument { Path = $"images/{vm}.svmi", Name = vm, Signers = [$"key{signerOf[i]}"], Sealed = isSealed, AllowRollback = r.Next(4) == 0 },
                Network = net,
                Devices = devices,
                Console = console,
                Clock = r.Next(2) == 0 ? "deterministic" : "realtime",
                Audit = new AuditDocument { Path = $"audit/{vm}.log", RecordData = r.Next(2) == 0 },
                Storage = storage.Count == 0 ? null : storage,
            });
        }
        for (int k = 0; k < Keys.Length; k++)
        {
            var vms = Enumerable.Range(0, n).Where(i => signerOf[i] == k).Select(i => doc.Vms[i]!.Name).ToList();
            if (vms.Count > 0)
            {
                doc.TrustAnchors.Add(new TrustAnchorDocument { Id = $"key{k}", PublicKey = Convert.ToBase64String(Keys[k].Bytes), KeyId = Keys[k].Id, MaySignFor = vms });
            }
        }
        doc.Host = new HostDocument { MemoryBudgetMiB = (int)total + r.Next(0, 1000) };
        return doc;
    }

    private static FilterRuleDocument RandomRule(Random r, int network)
    {
        var rule = new FilterRuleDocument { Direction = r.Next(2) == 0 ? "in" : "out", Action = r.Next(2) == 0 ? "allow" : "deny" };
        switch (r.Next(4))
        {
            case 0:
                rule.Ethertype = "arp";
                break;
            case 1:
                rule.Ethertype = "ipv4";
                rule.Protocol = r.Next(2) == 0 ? "tcp" : "udp";
                rule.Cidr = $"10.{network}.0.0/16";
                int first = r.Next(1, 65535);
                rule.Ports = r.Next(2) == 0 ? first.ToString(CultureInfo.InvariantCulture) : $"{first}-{r.Next(first, 65536)}";
                break;
            case 2:
                rule.Ethertype = "ipv6";
                rule.Protocol = "icmpv6";
                rule.RateLimit = new RateLimitDocument { PacketsPerSecond = r.Next(1, 1000), Burst = r.Next(1, 100) };
                break;
            default:
                rule.Ethertype = "0x88cc";
                break;
        }
        return rule;
    }

    /// <summary>One rule-breaking edit and the problem it must produce.</summary>
    private sealed record Mutation(string Name, PolicyRule Rule, Action<PolicyDocument, Random> Apply);

    private static readonly Mutation[] Mutations =
    [
        new("duplicate VM name", PolicyRule.DuplicateName, (d, r) => d.Vms![r.Next(1, d.Vms.Count)]!.Name = d.Vms[0]!.Name),
        new("duplicate network name", PolicyRule.DuplicateName, (d, r) => d.Networks![r.Next(1, d.Networks.Count)]!.Name = d.Networks[0]!.Name),
        new("network bound twice", PolicyRule.NetworkSharedByVms, (d, r) => d.Vms![r.Next(1, d.Vms.Count)]!.Network = d.Vms[0]!.Network),
        new("unknown network", PolicyRule.UnknownReference, (d, r) => d.Vms![r.Next(d.Vms.Count)]!.Network = "ghost-net"),
        new("label mismatch", PolicyRule.LabelMismatch, (d, r) =>
        {
            var label = d.Vms![r.Next(d.Vms.Count)]!.Label!;
            label.Colour = Colours[(Array.IndexOf(Colours, label.Colour) + r.Next(1, Colours.Length)) % Colours.Length];
        }),
        new("shared TAP", PolicyRule.SharedHostResource, (d, r) =>
        {
            d.Networks![0]!.Backend = new BackendDocument { Type = "tap", Tap = "shared0" };
            d.Networks[r.Next(1, d.Networks.Count)]!.Backend = new BackendDocument { Type = "tap", Tap = "shared0" };
        }),
        new("shared UDP port", PolicyRule.SharedHostResource, (d, r) =>
        {
            d.Networks![0]!.Backend = new BackendDocument { Type = "udp", Local = "127.0.0.1:7000", Remote = "127.0.0.1:7001" };
            d.Networks[r.Next(1, d.Networks.Count)]!.Backend = new BackendDocument { Type = "udp", Local = "127.0.0.1:7002", Remote = "10.9.9.9:7000" };
        }),
        new("shared audit log", PolicyRule.SharedHostResource, (d, r) => d.Vms![r.Next(1, d.Vms.Count)]!.Audit!.Path = d.Vms[0]!.Audit!.Path),
        new("memory over budget", PolicyRule.MemoryBudget, (d, r) => d.Host!.MemoryBudgetMiB = d.Vms!.Sum(v => v!.MemoryMiB!.Value) - 1),
        new("VM memory out of range", PolicyRule.MemoryOutOfRange, (d, r) => d.Vms![r.Next(d.Vms.Count)]!.MemoryMiB = r.Next(2) == 0 ? 1 : 5000),
        new("unsupported device", PolicyRule.UnsupportedDevice, (d, r) => d.Vms![r.Next(d.Vms.Count)]!.Devices!.Add(new[] { "floppy", "sound", "usb", "Serial" }[r.Next(4)])),
        new("signer not allowed", PolicyRule.SignerNotAllowed, (d, r) =>
        {
            var vm = d.Vms![r.Next(d.Vms.Count)]!;
            foreach (var anchor in d.TrustAnchors!)
            {
                anchor!.MaySignFor!.Remove(vm.Name);
            }
        }),
        new("sealed image with persistent storage", PolicyRule.SealedPersistentStorage, (d, r) =>
        {
            var vm = d.Vms![r.Next(d.Vms.Count)]!;
            vm.Image!.Sealed = true;
            (vm.Storage ??= []).Add(new StorageDocument { Name = "persist", Kind = "persistent", Path = $"disks/{vm.Name}-p.img", SizeMiB = 10 });
        }),
        new("multicast MAC", PolicyRule.BadMacAddress, (d, r) => d.Networks![r.Next(d.Networks.Count)]!.Mac = $"{(r.Next(128) * 2) + 1:x2}:00:00:00:00:01"),
        new("duplicate MAC", PolicyRule.DuplicateMacAddress, (d, r) => d.Networks![r.Next(1, d.Networks.Count)]!.Mac = d.Networks[0]!.Mac),
        new("bad address", PolicyRule.BadIpAddress, (d, r) =>
            d.Networks![r.Next(d.Networks.Count)]!.Addresses!.Add(new[] { "10.0.0.256/24", "10.0.0.1/33", "10.0.0.1", "fe80::1/200", "0.0.0.0/8" }[r.Next(5)])),
        new("bad filter rule", PolicyRule.BadFilterRule, (d, r) =>
            (d.Networks![r.Next(d.Networks.Count)]!.Filter ??= new FilterDocument()).Rules = [new FilterRuleDocument
            {
                Direction = "out", Action = "allow", Ethertype = "ipv4", Protocol = "icmp", Ports = "80",
            }]),
        new("unknown field", PolicyRule.UnknownField, (d, r) => d.Appliance = "\u0001unknown-field-marker"),
    ];

    private static PolicyCheckResult Validate(PolicyDocument doc)
    {
        string json = JsonSerializer.Serialize(doc, PolicyJsonContext.Default.PolicyDocument);
        // The unknown-field mutation works on the text: a misspelt field next to a real one.
        json = json.Replace("\"appliance\": \"\\u0001unknown-field-marker\"", "\"appliance\": \"x\", \"appliiance\": \"typo\"", StringComparison.Ordinal);
        return PolicyLoader.Check(Encoding.UTF8.GetBytes(json), "/policies/generated.json", null);
    }

    [Fact]
    public void GeneratedValidPoliciesAreAccepted()
    {
        Validate(ValidPolicy(1)); // warm-up outside the property so a setup failure reads plainly
        Check.One(Config.QuickThrowOnFailure.WithMaxTest(PolicySoak.Tests(200)), Prop.ForAll(Arb.From(ArbMap.Default.GeneratorFor<int>()), seed =>
        {
            var result = Validate(ValidPolicy(seed));
            return (result.Policy is not null && result.Problems.Count == 0)
                .Label("problems: " + string.Join("; ", result.Problems));
        }));
    }

    [Fact]
    public void EachBrokenRuleIsRefusedWithItsProblem()
    {
        var cases = from seed in ArbMap.Default.GeneratorFor<int>()
                    from mutation in Gen.Choose(0, Mutations.Length - 1)
                    select (seed, mutation);
        Check.One(Config.QuickThrowOnFailure.WithMaxTest(PolicySoak.Tests(400)), Prop.ForAll(Arb.From(cases), c =>
        {
            var doc = ValidPolicy(c.seed);
            var mutation = Mutations[c.mutation];
            mutation.Apply(doc, new Random(c.seed ^ 0x5eed));
            var result = Validate(doc);
            return (result.Policy is null && result.Problems.Any(p => p.Rule == mutation.Rule && p.Line >= 1))
                .Label($"{mutation.Name}: expected {mutation.Rule}; got: " + string.Join("; ", result.Problems.Select(p => $"{p.Rule} {p}")));
        }));
    }
}
