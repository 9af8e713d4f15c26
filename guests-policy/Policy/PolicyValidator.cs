using System.Collections.Immutable;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text.RegularExpressions;
using SecureVmm.Policy.Json;
using SecureVmm.Policy.Keys;

namespace SecureVmm.Policy.Policy;

/// <summary>
/// Checks a parsed policy against every rule in docs/policy.md and, only when none is broken,
/// builds the <see cref="ValidatedPolicy"/>. It never stops at the first problem: each one is
/// collected with its JSON path, line and column, so `policy check` can print them all.
/// </summary>
public sealed partial class PolicyValidator
{
    public const int FormatVersion = 1;
    public const int DefaultMemoryBudgetMiB = 4096;
    /// <summary>Hard cap on the host budget, whatever the policy says: a typo must not promise 4 TiB.</summary>
    public const int MaxMemoryBudgetMiB = 65536;
    public const int MinVmMemoryMiB = 2;
    /// <summary>GuestRam.MaxSize: guest RAM is one managed array.</summary>
    public const int MaxVmMemoryMiB = 2047;
    public const int MaxVms = 16;
    public const int MaxNetworks = 16;
    public const int MaxTrustAnchors = 32;
    public const int MaxFilterRules = 256;
    public const int MaxAddresses = 16;
    public const int MaxStorageMiB = 1 << 20;
    public const int DefaultMaxFrameSize = 1514;
    /// <summary>Smallest Ethernet frame without FCS (IEEE 802.3 clause 3.2.7: 64 bytes with FCS).</summary>
    public const int MinFrameSize = 60;
    /// <summary>Jumbo frames up to 9216 bytes, the common switch maximum.</summary>
    public const int MaxFrameSizeLimit = 9216;
    public const int MaxRate = 1_000_000;
    public const string DefaultRollbackStateFile = "/var/lib/securevmm/rollback-state.json";

    [GeneratedRegex("^[a-z][a-z0-9-]{0,31}$", RegexOptions.CultureInvariant)]
    private static partial Regex NamePattern();

    [GeneratedRegex("^[A-Za-z0-9][A-Za-z0-9 ._-]{0,63}$", RegexOptions.CultureInvariant)]
    private static partial Regex AppliancePattern();

    /// <summary>Linux interface names: at most IFNAMSIZ-1 = 15 bytes, no '/', ':' or whitespace.</summary>
    [GeneratedRegex("^[A-Za-z0-9_][A-Za-z0-9_.-]{0,14}$", RegexOptions.CultureInvariant)]
    private static partial Regex InterfacePattern();

    /// <summary>Network namespace names become file names under /run/netns.</summary>
    [GeneratedRegex("^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$", RegexOptions.CultureInvariant)]
    private static partial Regex NetnsPattern();

    [GeneratedRegex("^(0|[1-9][0-9]{0,4})(-(0|[1-9][0-9]{0,4}))?$", RegexOptions.CultureInvariant)]
    private static partial Regex PortsPattern();

    private const string NameRule = "a name of 1 to 32 characters: a lowercase letter, then lowercase letters, digits or '-'";

    private readonly string _file;
    private readonly string _baseDirectory;
    private readonly JsonPositions _positions;
    private readonly List<PolicyProblem> _problems;

    private PolicyValidator(string file, string baseDirectory, JsonPositions positions, List<PolicyProblem> problems)
    {
        _file = file;
        _baseDirectory = baseDirectory;
        _positions = positions;
        _problems = problems;
    }

    /// <summary>
    /// Validates <paramref name="doc"/>. Relative paths are resolved against <paramref name="baseDirectory"/>
    /// (the policy file's directory). Returns null when any problem was added to <paramref name="problems"/>.
    /// </summary>
    public static ValidatedPolicy? Validate(PolicyDocument doc, string file, string baseDirectory, JsonPositions positions,
        string sha256, string? adminKeyId, List<PolicyProblem> problems)
    {
        var validator = new PolicyValidator(file, baseDirectory, positions, problems);
        int before = problems.Count;
        var policy = validator.Run(doc, sha256, adminKeyId);
        return problems.Count == before ? policy : null;
    }

    private void Add(PolicyRule rule, string path, string message)
    {
        var (line, column) = _positions.Locate(path);
        _problems.Add(new PolicyProblem(rule, _file, path, line, column, message));
    }

    private ValidatedPolicy? Run(PolicyDocument doc, string sha256, string? adminKeyId)
    {
        if (doc.FormatVersion is null)
        {
            Add(PolicyRule.MissingField, "$.formatVersion", $"missing field 'formatVersion'; expected {FormatVersion}");
        }
        else if (doc.FormatVersion != FormatVersion)
        {
            Add(PolicyRule.BadValue, "$.formatVersion", $"unsupported format version {doc.FormatVersion}; expected {FormatVersion}");
        }

        string appliance = doc.Appliance ?? "";
        if (doc.Appliance is null)
        {
            Add(PolicyRule.MissingField, "$.appliance", "missing field 'appliance'; expected the appliance's name");
        }
        else if (!AppliancePattern().IsMatch(doc.Appliance))
        {
            Add(PolicyRule.BadValue, "$.appliance", "expected 1 to 64 characters: letters, digits, space, '.', '_' or '-', starting with a letter or digit");
        }

        int budget = doc.Host?.MemoryBudgetMiB ?? DefaultMemoryBudgetMiB;
        if (budget < MinVmMemoryMiB || budget > MaxMemoryBudgetMiB)
        {
            Add(PolicyRule.MemoryOutOfRange, "$.host.memoryBudgetMiB", $"memory budget {budget} MiB is outside {MinVmMemoryMiB}..{MaxMemoryBudgetMiB} MiB");
        }

        string rollbackFile = ResolvePath(doc.RollbackStateFile ?? DefaultRollbackStateFile, "$.rollbackStateFile") ?? "";

        var vmDocs = RequireList(doc.Vms, "$.vms", "vms", "the virtual machines", MaxVms, requireNonEmpty: true);
        var networkDocs = RequireList(doc.Networks, "$.networks", "networks", "the networks", MaxNetworks, requireNonEmpty: true);
        var anchorDocs = RequireList(doc.TrustAnchors, "$.trustAnchors", "trustAnchors", "the image-signing keys", MaxTrustAnchors, requireNonEmpty: true);

        var vmNames = new HashSet<string>(StringComparer.Ordinal);
        for (int i = 0; i < vmDocs.Count; i++)
        {
            CheckUniqueName(vmDocs[i]?.Name, $"$.vms[{i}].name", vmNames, "VM");
        }

        var resources = new HostResources(this);
        resources.ClaimWritable(rollbackFile, "$.rollbackStateFile", "the rollback state file");

        var anchors = new Dictionary<string, TrustAnchor>(StringComparer.Ordinal);
        var anchorIds = new HashSet<string>(StringComparer.Ordinal);
        var keyOwners = new Dictionary<string, string>(StringComparer.Ordinal);
        for (int i = 0; i < anchorDocs.Count; i++)
        {
            var anchor = CheckTrustAnchor(anchorDocs[i], $"$.trustAnchors[{i}]", vmNames, anchorIds, keyOwners);
            if (anchor is not null)
            {
                anchors[anchor.Id] = anchor;
            }
        }

        var networks = new Dictionary<string, NetworkPolicy>(StringComparer.Ordinal);
        var networkNames = new HashSet<string>(StringComparer.Ordinal);
        var macOwners = new Dictionary<ulong, string>();
        var networkLabels = new Dictionary<string, SecurityLabel>(StringComparer.Ordinal);
        var networkList = new List<NetworkPolicy>();
        for (int i = 0; i < networkDocs.Count; i++)
        {
            var network = CheckNetwork(networkDocs[i], $"$.networks[{i}]", networkNames, networkLabels, macOwners, resources);
            if (network is not null)
            {
                networks[network.Name] = network;
                networkList.Add(network);
            }
        }

        // Image files are read-only to the appliance; no writable file may alias one of them.
        foreach (var vm in vmDocs)
        {
            if (vm?.Image?.Path is { } imagePath && ResolvePathQuiet(imagePath) is { } full)
            {
                resources.NoteReadOnly(full);
            }
        }

        var networkOwners = new Dictionary<string, string>(StringComparer.Ordinal);
        var vms = new List<VmPolicy>();
        long totalMemory = 0;
        for (int i = 0; i < vmDocs.Count; i++)
        {
            var vm = CheckVm(vmDocs[i], $"$.vms[{i}]", anchors, anchorIds, networks, networkLabels, networkNames, networkOwners, resources, ref totalMemory);
            if (vm is not null)
            {
                vms.Add(vm);
            }
        }
        if (totalMemory > budget)
        {
            Add(PolicyRule.MemoryBudget, "$.vms",
                $"the VMs need {totalMemory} MiB (memory plus ephemeral storage) but the host budget (host.memoryBudgetMiB) is {budget} MiB");
        }
        resources.CheckReadOnlyAliases();

        return new ValidatedPolicy(_file, sha256, adminKeyId, appliance, budget, rollbackFile,
            [.. anchors.Values], [.. networkList], [.. vms]);
    }

    private List<T?> RequireList<T>(List<T?>? list, string path, string field, string what, int max, bool requireNonEmpty)
        where T : class
    {
        if (list is null)
        {
            Add(PolicyRule.MissingField, path, $"missing field '{field}'; expected a list of {what}");
            return [];
        }
        if (requireNonEmpty && list.Count == 0)
        {
            Add(PolicyRule.BadValue, path, $"'{field}' is empty; expected at least one entry");
        }
        if (list.Count > max)
        {
            Add(PolicyRule.BadValue, path, $"'{field}' has {list.Count} entries; at most {max} are allowed");
        }
        for (int i = 0; i < list.Count; i++)
        {
            if (list[i] is null)
            {
                Add(PolicyRule.WrongType, $"{path}[{i}]", "expected an object, found null");
            }
        }
        return list;
    }

    private void CheckUniqueName(string? name, string path, HashSet<string> seen, string what)
    {
        if (name is null)
        {
            Add(PolicyRule.MissingField, path, $"missing field 'name'; expected the {what}'s name");
        }
        else if (!NamePattern().IsMatch(name))
        {
            Add(PolicyRule.BadValue, path, $"{what} name \"{name}\" is not {NameRule}");
        }
        else if (!seen.Add(name))
        {
            Add(PolicyRule.DuplicateName, path, $"duplicate {what} name \"{name}\"; names must be unique");
        }
    }

    private TrustAnchor? CheckTrustAnchor(TrustAnchorDocument? doc, string path, HashSet<string> vmNames,
        HashSet<string> ids, Dictionary<string, string> keyOwners)
    {
        if (doc is null)
        {
            return null;
        }
        bool ok = true;
        if (doc.Id is null)
        {
            Add(PolicyRule.MissingField, path + ".id", "missing field 'id'; expected the trust anchor's name");
            ok = false;
        }
        else if (!NamePattern().IsMatch(doc.Id))
        {
            Add(PolicyRule.BadValue, path + ".id", $"trust anchor id \"{doc.Id}\" is not {NameRule}");
            ok = false;
        }
        else if (!ids.Add(doc.Id))
        {
            Add(PolicyRule.DuplicateName, path + ".id", $"duplicate trust anchor id \"{doc.Id}\"; ids must be unique");
            ok = false;
        }

        Ed25519PublicKey? key = null;
        if (doc.PublicKey is null)
        {
            Add(PolicyRule.MissingField, path + ".publicKey", "missing field 'publicKey'; expected a base64 Ed25519 public key (32 bytes)");
        }
        else
        {
            byte[]? raw = null;
            try
            {
                raw = Convert.FromBase64String(doc.PublicKey);
            }
            catch (FormatException)
            {
                Add(PolicyRule.BadTrustAnchor, path + ".publicKey", "not base64; expected a base64 Ed25519 public key (32 bytes)");
            }
            if (raw is not null && raw.Length != Ed25519PublicKey.Size)
            {
                Add(PolicyRule.BadTrustAnchor, path + ".publicKey", $"decodes to {raw.Length} bytes; an Ed25519 public key is {Ed25519PublicKey.Size} bytes");
            }
            else if (raw is not null)
            {
                key = new Ed25519PublicKey(raw);
                if (doc.KeyId is not null && doc.KeyId != key.Id)
                {
                    Add(PolicyRule.BadTrustAnchor, path + ".keyId", $"keyId is {doc.KeyId} but the public key's id is {key.Id}");
                }
                if (!keyOwners.TryAdd(key.Id, path))
                {
                    Add(PolicyRule.BadTrustAnchor, path + ".publicKey", $"the same public key is already trust anchor {keyOwners[key.Id]}; give each key one entry");
                }
            }
        }

        var maySignFor = new List<string>();
        if (doc.MaySignFor is null || doc.MaySignFor.Count == 0)
        {
            Add(PolicyRule.MissingField, path + ".maySignFor", "missing or empty 'maySignFor'; expected the names of the VMs whose images this key may sign");
        }
        else
        {
            for (int j = 0; j < doc.MaySignFor.Count; j++)
            {
                string? vm = doc.MaySignFor[j];
                string itemPath = $"{path}.maySignFor[{j}]";
                if (vm is null || !vmNames.Contains(vm))
                {
                    Add(PolicyRule.UnknownReference, itemPath, $"\"{vm}\" is not the name of a VM in this policy");
                }
                else if (maySignFor.Contains(vm))
                {
                    Add(PolicyRule.DuplicateName, itemPath, $"VM \"{vm}\" is listed twice");
                }
                else
                {
                    maySignFor.Add(vm);
                }
            }
        }
        return ok && key is not null ? new TrustAnchor(doc.Id!, key, [.. maySignFor]) : null;
    }

    private SecurityLabel? CheckLabel(LabelDocument? doc, string path)
    {
        if (doc is null)
        {
            Add(PolicyRule.MissingField, path, "missing field 'label'; expected {\"level\": ..., \"colour\": ...}");
            return null;
        }
        var level = Lookup(PolicyNames.Levels, doc.Level, path + ".level", "level", "classification level");
        var colour = Lookup(PolicyNames.Colours, doc.Colour, path + ".colour", "colour", "label colour");
        return level is { } l && colour is { } c ? new SecurityLabel(l, c) : null;
    }

    private T? Lookup<T>(IReadOnlyDictionary<string, T> table, string? value, string path, string field, string what,
        PolicyRule rule = PolicyRule.BadValue)
        where T : struct
    {
        if (value is null)
        {
            Add(PolicyRule.MissingField, path, $"missing field '{field}'; expected a {what}: {PolicyNames.OneOf(table)}");
            return null;
        }
        if (table.TryGetValue(value, out T result))
        {
            return result;
        }
        Add(rule, path, $"\"{value}\" is not a {what}; expected {PolicyNames.OneOf(table)}");
        return null;
    }

    private NetworkPolicy? CheckNetwork(NetworkDocument? doc, string path, HashSet<string> names,
        Dictionary<string, SecurityLabel> labels, Dictionary<ulong, string> macOwners, HostResources resources)
    {
        if (doc is null)
        {
            return null;
        }
        int before = _problems.Count;
        CheckUniqueName(doc.Name, path + ".name", names, "network");
        var label = CheckLabel(doc.Label, path + ".label");
        if (label is { } known && doc.Name is not null)
        {
            labels.TryAdd(doc.Name, known);
        }
        var backend = CheckBackend(doc.Backend, path + ".backend", resources);

        ulong mac = 0;
        if (doc.Mac is null)
        {
            Add(PolicyRule.MissingField, path + ".mac", "missing field 'mac'; expected the VM's MAC address, e.g. \"02:00:00:00:00:01\"");
        }
        else if (!TryParseMac(doc.Mac, out mac))
        {
            Add(PolicyRule.BadMacAddress, path + ".mac", $"\"{doc.Mac}\" is not a MAC address; expected six hex pairs separated by ':'");
        }
        else if ((mac & 0x0100_0000_0000UL) != 0)
        {
            // IEEE 802-2014 clause 8.2: the I/G bit (least significant bit of the first octet) marks group addresses.
            Add(PolicyRule.BadMacAddress, path + ".mac", $"{doc.Mac} is a multicast (group) address; a NIC needs a unicast address");
        }
        else if (mac == 0)
        {
            Add(PolicyRule.BadMacAddress, path + ".mac", "00:00:00:00:00:00 is not a usable MAC address");
        }
        else if (!macOwners.TryAdd(mac, path))
        {
            Add(PolicyRule.DuplicateMacAddress, path + ".mac", $"MAC {PolicyNames.Mac(mac)} is already used by {macOwners[mac]}; each NIC needs its own");
        }

        var addresses = new List<InterfaceAddress>();
        var addressList = doc.Addresses ?? [];
        if (addressList.Count > MaxAddresses)
        {
            Add(PolicyRule.BadValue, path + ".addresses", $"{addressList.Count} addresses; at most {MaxAddresses} are allowed");
        }
        for (int j = 0; j < addressList.Count; j++)
        {
            if (CheckInterfaceAddress(addressList[j], $"{path}.addresses[{j}]") is { } a)
            {
                addresses.Add(a);
            }
        }
        var filter = CheckFilter(doc.Filter, path + ".filter");

        if (_problems.Count != before || label is null || backend is null || filter is null)
        {
            return null;
        }
        return new NetworkPolicy(doc.Name!, label.Value, backend, mac, [.. addresses], filter);
    }

    private static bool TryParseMac(string text, out ulong mac)
    {
        mac = 0;
        if (text.Length != 17)
        {
            return false;
        }
        for (int i = 0; i < 6; i++)
        {
            if (i > 0 && text[(i * 3) - 1] != ':')
            {
                return false;
            }
            if (!byte.TryParse(text.AsSpan(i * 3, 2), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out byte b))
            {
                return false;
            }
            mac = (mac << 8) | b;
        }
        return true;
    }

    /// <summary>Strict address parsing: IPv4 only as four decimal octets (IPAddress.TryParse also takes "10.1" and "0x0a.1").</summary>
    internal static bool TryParseAddress(string text, out IPAddress address)
    {
        address = IPAddress.None;
        if (!IPAddress.TryParse(text, out var parsed))
        {
            return false;
        }
        if (parsed.AddressFamily == AddressFamily.InterNetwork && parsed.ToString() != text)
        {
            return false;
        }
        if (parsed.AddressFamily == AddressFamily.InterNetworkV6 && (text.Contains('%', StringComparison.Ordinal) || parsed.IsIPv4MappedToIPv6))
        {
            return false;
        }
        address = parsed;
        return true;
    }

    private InterfaceAddress? CheckInterfaceAddress(string? text, string path)
    {
        int slash = text?.IndexOf('/', StringComparison.Ordinal) ?? -1;
        if (text is null || slash < 0 || !TryParseAddress(text[..slash], out var address)
            || !int.TryParse(text.AsSpan(slash + 1), NumberStyles.None, CultureInfo.InvariantCulture, out int prefix)
            || prefix > (address.AddressFamily == AddressFamily.InterNetwork ? 32 : 128))
        {
            Add(PolicyRule.BadIpAddress, path, $"\"{text}\" is not an address with prefix length; expected e.g. \"10.1.0.2/24\" or \"fd00::2/64\"");
            return null;
        }
        if (address.Equals(IPAddress.Any) || address.Equals(IPAddress.IPv6Any) || address.Equals(IPAddress.Broadcast)
            || IsMulticast(address) || IPAddress.IsLoopback(address))
        {
            Add(PolicyRule.BadIpAddress, path, $"{address} cannot be a NIC's address (unspecified, broadcast, multicast or loopback)");
            return null;
        }
        return new InterfaceAddress(address, prefix);
    }

    private static bool IsMulticast(IPAddress address) =>
        address.AddressFamily == AddressFamily.InterNetwork
            ? (address.GetAddressBytes()[0] & 0xF0) == 0xE0
            : address.IsIPv6Multicast;

    private NetworkBackend? CheckBackend(BackendDocument? doc, string path, HostResources resources)
    {
        if (doc is null)
        {
            Add(PolicyRule.MissingField, path, $"missing field 'backend'; expected an object with 'type' {PolicyNames.OneOf(PolicyNames.BackendTypes)}");
            return null;
        }
        int before = _problems.Count;
        // Which fields each backend type takes; any other field set is an error, not silently ignored.
        (string Field, string? Value)[] fields =
            [("tap", doc.Tap), ("bridge", doc.Bridge), ("netns", doc.Netns), ("remote", doc.Remote), ("local", doc.Local), ("file", doc.File)];
        string[] allowed = doc.Type switch
        {
            "tap" => ["tap", "bridge", "netns"],
            "udp" => ["remote", "local"],
            "pcap" => ["file"],
            "none" => [],
            _ => [],
        };
        if (doc.Type is null)
        {
            Add(PolicyRule.MissingField, path + ".type", $"missing field 'type'; expected {PolicyNames.OneOf(PolicyNames.BackendTypes)}");
            return null;
        }
        if (!PolicyNames.BackendTypes.Contains(doc.Type))
        {
            Add(PolicyRule.BadBackend, path + ".type", $"\"{doc.Type}\" is not a backend type; expected {PolicyNames.OneOf(PolicyNames.BackendTypes)}");
            return null;
        }
        foreach (var (field, value) in fields)
        {
            if (value is not null && !allowed.Contains(field))
            {
                Add(PolicyRule.BadBackend, $"{path}.{field}", $"field '{field}' does not apply to a {doc.Type} backend" +
                    (allowed.Length == 0 ? "; it takes no parameters" : $"; it takes {string.Join(", ", allowed)}"));
            }
        }
        switch (doc.Type)
        {
            case "tap":
                if (doc.Tap is null)
                {
                    Add(PolicyRule.MissingField, path + ".tap", "missing field 'tap'; expected the TAP device's name");
                }
                else if (!InterfacePattern().IsMatch(doc.Tap))
                {
                    Add(PolicyRule.BadBackend, path + ".tap", $"\"{doc.Tap}\" is not a Linux interface name (1 to 15 of A-Z a-z 0-9 _ . -)");
                }
                else
                {
                    resources.Claim("tap device " + doc.Tap, path + ".tap");
                }
                if (doc.Bridge is not null)
                {
                    if (!InterfacePattern().IsMatch(doc.Bridge))
                    {
                        Add(PolicyRule.BadBackend, path + ".bridge", $"\"{doc.Bridge}\" is not a Linux interface name (1 to 15 of A-Z a-z 0-9 _ . -)");
                    }
                    else
                    {
                        // Two TAPs on one bridge would be one Ethernet segment: exactly the crossing the appliance exists to prevent.
                        resources.Claim("bridge " + doc.Bridge, path + ".bridge");
                    }
                }
                if (doc.Netns is not null)
                {
                    if (!NetnsPattern().IsMatch(doc.Netns) || doc.Netns is "." or "..")
                    {
                        Add(PolicyRule.BadBackend, path + ".netns", $"\"{doc.Netns}\" is not a network namespace name (1 to 64 of A-Z a-z 0-9 _ . -)");
                    }
                    else
                    {
                        resources.Claim("network namespace " + doc.Netns, path + ".netns");
                    }
                }
                return _problems.Count == before ? new TapBackend(doc.Tap!, doc.Bridge, doc.Netns) : null;
            case "udp":
                var remote = CheckEndpoint(doc.Remote, path + ".remote", "remote");
                var local = CheckEndpoint(doc.Local, path + ".local", "local");
                if (remote is not null && local is not null)
                {
                    // Conservative: every UDP port number belongs to one network, whatever the address,
                    // so wildcard and specific bindings can never meet on the same port.
                    resources.Claim("UDP port " + local.Port.ToString(CultureInfo.InvariantCulture), path + ".local");
                    if (remote.Port != local.Port)
                    {
                        resources.Claim("UDP port " + remote.Port.ToString(CultureInfo.InvariantCulture), path + ".remote");
                    }
                }
                return _problems.Count == before && remote is not null && local is not null ? new UdpBackend(remote, local) : null;
            case "pcap":
                if (doc.File is null)
                {
                    Add(PolicyRule.MissingField, path + ".file", "missing field 'file'; expected the pcap file to write");
                    return null;
                }
                string? file = ResolvePath(doc.File, path + ".file");
                if (file is not null)
                {
                    resources.ClaimWritable(file, path + ".file", "a pcap file");
                }
                return _problems.Count == before && file is not null ? new PcapBackend(file) : null;
            default:
                return _problems.Count == before ? new NoBackend() : null;
        }
    }

    private IPEndPoint? CheckEndpoint(string? text, string path, string field)
    {
        if (text is null)
        {
            Add(PolicyRule.MissingField, path, $"missing field '{field}'; expected \"ADDRESS:PORT\" (IPv6 as \"[ADDRESS]:PORT\")");
            return null;
        }
        int colon = text.LastIndexOf(':');
        string host = colon > 0 ? text[..colon] : "";
        if (host.StartsWith('[') && host.EndsWith(']'))
        {
            host = host[1..^1];
        }
        else if (host.Contains(':', StringComparison.Ordinal))
        {
            host = ""; // IPv6 without brackets is ambiguous.
        }
        if (colon <= 0 || !TryParseAddress(host, out var address)
            || !int.TryParse(text.AsSpan(colon + 1), NumberStyles.None, CultureInfo.InvariantCulture, out int port)
            || port is < 1 or > 65535)
        {
            Add(PolicyRule.BadBackend, path, $"\"{text}\" is not \"ADDRESS:PORT\" with a port in 1..65535 (IPv6 as \"[ADDRESS]:PORT\")");
            return null;
        }
        if (field == "remote" && (address.Equals(IPAddress.Any) || address.Equals(IPAddress.IPv6Any)))
        {
            Add(PolicyRule.BadBackend, path, "the remote address cannot be the unspecified address");
            return null;
        }
        return new IPEndPoint(address, port);
    }

    private FilterPolicy? CheckFilter(FilterDocument? doc, string path)
    {
        if (doc is null)
        {
            return new FilterPolicy(FilterAction.Deny, DefaultMaxFrameSize, true, []);
        }
        int before = _problems.Count;
        var defaultAction = doc.DefaultAction is null ? FilterAction.Deny
            : Lookup(PolicyNames.Actions, doc.DefaultAction, path + ".defaultAction", "defaultAction", "filter action", PolicyRule.BadFilterRule);
        int maxFrame = doc.MaxFrameSize ?? DefaultMaxFrameSize;
        if (maxFrame is < MinFrameSize or > MaxFrameSizeLimit)
        {
            Add(PolicyRule.BadFilterRule, path + ".maxFrameSize", $"{maxFrame} is outside {MinFrameSize}..{MaxFrameSizeLimit} bytes (an Ethernet frame without FCS)");
        }
        var rules = new List<FilterRulePolicy>();
        var ruleDocs = doc.Rules ?? [];
        if (ruleDocs.Count > MaxFilterRules)
        {
            Add(PolicyRule.BadFilterRule, path + ".rules", $"{ruleDocs.Count} rules; at most {MaxFilterRules} are allowed");
        }
        for (int k = 0; k < ruleDocs.Count; k++)
        {
            if (ruleDocs[k] is not { } ruleDoc)
            {
                Add(PolicyRule.WrongType, $"{path}.rules[{k}]", "expected an object, found null");
            }
            else if (CheckRule(ruleDoc, $"{path}.rules[{k}]") is { } rule)
            {
                rules.Add(rule);
            }
        }
        return _problems.Count == before && defaultAction is not null
            ? new FilterPolicy(defaultAction.Value, maxFrame, doc.AntiSpoofing ?? true, [.. rules])
            : null;
    }

    private FilterRulePolicy? CheckRule(FilterRuleDocument doc, string path)
    {
        int before = _problems.Count;
        var direction = Lookup(PolicyNames.Directions, doc.Direction, path + ".direction", "direction", "direction", PolicyRule.BadFilterRule);
        var action = Lookup(PolicyNames.Actions, doc.Action, path + ".action", "action", "filter action", PolicyRule.BadFilterRule);

        ushort? etherType = null;
        if (doc.Ethertype is not null)
        {
            if (PolicyNames.EtherTypes.TryGetValue(doc.Ethertype, out ushort named))
            {
                etherType = named;
            }
            else if (doc.Ethertype.Length == 6 && doc.Ethertype.StartsWith("0x", StringComparison.Ordinal)
                && ushort.TryParse(doc.Ethertype.AsSpan(2), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out ushort value)
                && value >= 0x0600)
            {
                // IEEE 802.3 clause 3.2.6: values of 1536 (0x0600) and above are EtherTypes; below, a length.
                etherType = value;
            }
            else
            {
                Add(PolicyRule.BadFilterRule, path + ".ethertype",
                    $"\"{doc.Ethertype}\" is not an EtherType; expected {PolicyNames.OneOf(PolicyNames.EtherTypes)} or \"0xNNNN\" from 0x0600 up");
            }
        }
        bool isIpv4 = etherType == 0x0800;
        bool isIpv6 = etherType == 0x86DD;

        IpProtocol? protocol = null;
        if (doc.Protocol is not null)
        {
            protocol = Lookup(PolicyNames.Protocols, doc.Protocol, path + ".protocol", "protocol", "protocol", PolicyRule.BadFilterRule);
            if (protocol is not null && !isIpv4 && !isIpv6)
            {
                Add(PolicyRule.BadFilterRule, path + ".protocol", "a protocol needs \"ethertype\": \"ipv4\" or \"ipv6\"");
            }
            else if ((protocol == IpProtocol.Icmp && !isIpv4) || (protocol == IpProtocol.IcmpV6 && !isIpv6))
            {
                Add(PolicyRule.BadFilterRule, path + ".protocol", $"protocol \"{doc.Protocol}\" does not go with ethertype \"{doc.Ethertype}\"");
            }
        }

        IPNetwork? cidr = null;
        if (doc.Cidr is not null)
        {
            if (!doc.Cidr.Contains('/', StringComparison.Ordinal) || !TryParseAddress(doc.Cidr.Split('/')[0], out var baseAddress)
                || !IPNetwork.TryParse(doc.Cidr, out var network) || !network.BaseAddress.Equals(baseAddress))
            {
                Add(PolicyRule.BadFilterRule, path + ".cidr", $"\"{doc.Cidr}\" is not a CIDR block with the host bits zero, e.g. \"10.1.0.0/24\"");
            }
            else if (!isIpv4 && !isIpv6)
            {
                Add(PolicyRule.BadFilterRule, path + ".cidr", "a CIDR needs \"ethertype\": \"ipv4\" or \"ipv6\"");
            }
            else if ((network.BaseAddress.AddressFamily == AddressFamily.InterNetwork) != isIpv4)
            {
                Add(PolicyRule.BadFilterRule, path + ".cidr", $"\"{doc.Cidr}\" is not an {(isIpv4 ? "IPv4" : "IPv6")} block, but the rule's ethertype is \"{doc.Ethertype}\"");
            }
            else
            {
                cidr = network;
            }
        }

        PortRange? ports = null;
        if (doc.Ports is not null)
        {
            var match = PortsPattern().Match(doc.Ports);
            int first = match.Success ? int.Parse(match.Groups[1].Value, CultureInfo.InvariantCulture) : 0;
            int last = match.Success && match.Groups[3].Success ? int.Parse(match.Groups[3].Value, CultureInfo.InvariantCulture) : first;
            if (!match.Success || first < 1 || last > 65535 || first > last)
            {
                Add(PolicyRule.BadFilterRule, path + ".ports", $"\"{doc.Ports}\" is not a port or range; expected \"N\" or \"N-M\" with 1 <= N <= M <= 65535");
            }
            else if (protocol is not (IpProtocol.Tcp or IpProtocol.Udp))
            {
                Add(PolicyRule.BadFilterRule, path + ".ports", "ports need \"protocol\": \"tcp\" or \"udp\"");
            }
            else
            {
                ports = new PortRange((ushort)first, (ushort)last);
            }
        }

        RateLimit? rate = null;
        if (doc.RateLimit is { } r)
        {
            if (r.PacketsPerSecond is not { } pps || pps < 1 || pps > MaxRate)
            {
                Add(PolicyRule.BadFilterRule, path + ".rateLimit.packetsPerSecond", $"expected packetsPerSecond in 1..{MaxRate}");
            }
            else if (r.Burst is not { } burst || burst < 1 || burst > MaxRate)
            {
                Add(PolicyRule.BadFilterRule, path + ".rateLimit.burst", $"expected burst (packets) in 1..{MaxRate}");
            }
            else
            {
                rate = new RateLimit(pps, burst);
            }
        }
        return _problems.Count == before && direction is not null && action is not null
            ? new FilterRulePolicy(direction.Value, action.Value, etherType, protocol, cidr, ports, rate)
            : null;
    }

    private VmPolicy? CheckVm(VmDocument? doc, string path, Dictionary<string, TrustAnchor> anchors, HashSet<string> anchorIds,
        Dictionary<string, NetworkPolicy> networks, Dictionary<string, SecurityLabel> networkLabels, HashSet<string> networkNames,
        Dictionary<string, string> networkOwners,
        HostResources resources, ref long totalMemory)
    {
        if (doc is null)
        {
            return null;
        }
        int before = _problems.Count;
        string name = doc.Name ?? "";
        var label = CheckLabel(doc.Label, path + ".label");

        if (doc.MemoryMiB is null)
        {
            Add(PolicyRule.MissingField, path + ".memoryMiB", $"missing field 'memoryMiB'; expected {MinVmMemoryMiB}..{MaxVmMemoryMiB}");
        }
        else if (doc.MemoryMiB is < MinVmMemoryMiB or > MaxVmMemoryMiB)
        {
            Add(PolicyRule.MemoryOutOfRange, path + ".memoryMiB", $"{doc.MemoryMiB} MiB is outside {MinVmMemoryMiB}..{MaxVmMemoryMiB} MiB");
        }
        else
        {
            totalMemory += doc.MemoryMiB.Value;
        }

        var image = CheckImage(doc.Image, path + ".image", name, anchors, anchorIds);

        NetworkPolicy? network = null;
        if (doc.Network is null)
        {
            Add(PolicyRule.MissingField, path + ".network", "missing field 'network'; every VM is bound to exactly one network (use a network with backend \"none\" for an isolated VM)");
        }
        else if (!networkNames.Contains(doc.Network))
        {
            Add(PolicyRule.UnknownReference, path + ".network", $"\"{doc.Network}\" is not the name of a network in this policy");
        }
        else
        {
            if (!networkOwners.TryAdd(doc.Network, path))
            {
                Add(PolicyRule.NetworkSharedByVms, path + ".network", $"network \"{doc.Network}\" is already bound to {networkOwners[doc.Network]}; a network carries at most one VM");
            }
            networks.TryGetValue(doc.Network, out network);
            if (networkLabels.TryGetValue(doc.Network, out var networkLabel) && label is { } vmLabel && networkLabel != vmLabel)
            {
                Add(PolicyRule.LabelMismatch, path + ".label", $"the VM is labelled {vmLabel} but its network \"{doc.Network}\" is labelled {networkLabel}; they must match");
            }
        }

        var devices = new List<DeviceKind>();
        if (doc.Devices is null)
        {
            Add(PolicyRule.MissingField, path + ".devices", $"missing field 'devices'; expected a list of {PolicyNames.OneOf(PolicyNames.Devices)}");
        }
        else
        {
            for (int j = 0; j < doc.Devices.Count; j++)
            {
                string? device = doc.Devices[j];
                string devicePath = $"{path}.devices[{j}]";
                if (device is null || !PolicyNames.Devices.TryGetValue(device, out var kind))
                {
                    Add(PolicyRule.UnsupportedDevice, devicePath, $"\"{device}\" is not a supported device; expected {PolicyNames.OneOf(PolicyNames.Devices)}");
                }
                else if (devices.Contains(kind))
                {
                    Add(PolicyRule.UnsupportedDevice, devicePath, $"device \"{device}\" is listed twice; each device exists once");
                }
                else
                {
                    devices.Add(kind);
                }
            }
        }

        var console = Lookup(PolicyNames.Consoles, doc.Console, path + ".console", "console", "console");
        if (console == ConsoleKind.Serial && doc.Devices is not null && !devices.Contains(DeviceKind.Serial))
        {
            Add(PolicyRule.UnsupportedDevice, path + ".console", "console \"serial\" needs the \"serial\" device in 'devices'");
        }
        else if (console == ConsoleKind.Vga && doc.Devices is not null && !devices.Contains(DeviceKind.Vga))
        {
            Add(PolicyRule.UnsupportedDevice, path + ".console", "console \"vga\" needs the \"vga\" device in 'devices'");
        }
        var clock = Lookup(PolicyNames.Clocks, doc.Clock, path + ".clock", "clock", "clock mode");

        AuditPolicy? audit = null;
        if (doc.Audit is null)
        {
            Add(PolicyRule.MissingField, path + ".audit", "missing field 'audit'; expected {\"path\": FILE} — every VM exit is recorded");
        }
        else if (doc.Audit.Path is null)
        {
            Add(PolicyRule.MissingField, path + ".audit.path", "missing field 'path'; expected the audit log file");
        }
        else if (ResolvePath(doc.Audit.Path, path + ".audit.path") is { } auditPath)
        {
            resources.ClaimWritable(auditPath, path + ".audit.path", "an audit log");
            audit = new AuditPolicy(auditPath, doc.Audit.RecordData ?? false);
        }

        var storage = new List<StoragePolicy>();
        var storageNames = new HashSet<string>(StringComparer.Ordinal);
        var storageDocs = doc.Storage ?? [];
        for (int j = 0; j < storageDocs.Count; j++)
        {
            string storagePath = $"{path}.storage[{j}]";
            var s = storageDocs[j];
            if (s is null)
            {
                Add(PolicyRule.WrongType, storagePath, "expected an object, found null");
                continue;
            }
            CheckUniqueName(s.Name, storagePath + ".name", storageNames, "storage");
            var kind = Lookup(PolicyNames.StorageKinds, s.Kind, storagePath + ".kind", "kind", "storage kind");
            if (s.SizeMiB is not { } size || size < 1 || size > MaxStorageMiB)
            {
                Add(PolicyRule.BadValue, storagePath + ".sizeMiB", $"expected sizeMiB in 1..{MaxStorageMiB}");
                size = 0;
            }
            string? file = null;
            if (kind == StorageKind.Persistent)
            {
                if (image?.Sealed == true)
                {
                    Add(PolicyRule.SealedPersistentStorage, storagePath + ".kind",
                        "the VM's image is sealed; a sealed image gets no persistent writable storage (use \"ephemeral\", discarded at stop)");
                }
                if (s.Path is null)
                {
                    Add(PolicyRule.MissingField, storagePath + ".path", "missing field 'path'; persistent storage needs a backing file");
                }
                else if ((file = ResolvePath(s.Path, storagePath + ".path")) is not null)
                {
                    resources.ClaimWritable(file, storagePath + ".path", "a storage file");
                }
            }
            else if (kind == StorageKind.Ephemeral)
            {
                if (s.Path is not null)
                {
                    Add(PolicyRule.BadValue, storagePath + ".path", "ephemeral storage lives in memory and is discarded at stop; it takes no 'path'");
                }
                totalMemory += size;
            }
            if (kind is { } k && s.Name is not null)
            {
                storage.Add(new StoragePolicy(s.Name, k, file, size));
            }
        }

        if (_problems.Count != before || label is null || image is null || network is null || console is null || clock is null || audit is null)
        {
            return null;
        }
        return new VmPolicy(name, label.Value, doc.MemoryMiB!.Value, image, network, [.. devices], console.Value, clock.Value, audit, [.. storage]);
    }

    private ImagePolicy? CheckImage(ImageReferenceDocument? doc, string path, string vmName, Dictionary<string, TrustAnchor> anchors, HashSet<string> anchorIds)
    {
        if (doc is null)
        {
            Add(PolicyRule.MissingField, path, "missing field 'image'; expected {\"path\": ..., \"name\": ..., \"signers\": [...]}");
            return null;
        }
        int before = _problems.Count;
        string? file = null;
        if (doc.Path is null)
        {
            Add(PolicyRule.MissingField, path + ".path", "missing field 'path'; expected the signed image file");
        }
        else
        {
            file = ResolvePath(doc.Path, path + ".path");
        }
        if (doc.Name is null)
        {
            Add(PolicyRule.MissingField, path + ".name", "missing field 'name'; expected the name the image's manifest must carry");
        }
        else if (!NamePattern().IsMatch(doc.Name))
        {
            Add(PolicyRule.BadValue, path + ".name", $"image name \"{doc.Name}\" is not {NameRule}");
        }
        var signers = new List<TrustAnchor>();
        if (doc.Signers is null || doc.Signers.Count == 0)
        {
            Add(PolicyRule.MissingField, path + ".signers", "missing or empty 'signers'; expected the ids of the trust anchors that may sign this image");
        }
        else
        {
            for (int j = 0; j < doc.Signers.Count; j++)
            {
                string? id = doc.Signers[j];
                string signerPath = $"{path}.signers[{j}]";
                if (id is null || !anchorIds.Contains(id))
                {
                    Add(PolicyRule.UnknownReference, signerPath, $"\"{id}\" is not the id of a trust anchor in this policy");
                }
                else if (anchors.TryGetValue(id, out var anchor))
                {
                    if (!anchor.MaySignForVm(vmName))
                    {
                        Add(PolicyRule.SignerNotAllowed, signerPath,
                            $"trust anchor \"{id}\" may not sign images for VM \"{vmName}\" (its maySignFor is [{string.Join(", ", anchor.MaySignFor)}])");
                    }
                    else if (signers.Contains(anchor))
                    {
                        Add(PolicyRule.DuplicateName, signerPath, $"signer \"{id}\" is listed twice");
                    }
                    else
                    {
                        signers.Add(anchor);
                    }
                }
            }
        }
        return _problems.Count == before
            ? new ImagePolicy(file!, doc.Name!, [.. signers], doc.Sealed ?? false, doc.AllowRollback ?? false)
            : null;
    }

    private string? ResolvePathQuiet(string path)
    {
        if (path.Length == 0 || path.Contains('\0', StringComparison.Ordinal))
        {
            return null;
        }
        try
        {
            return Path.GetFullPath(path, _baseDirectory);
        }
        catch (ArgumentException)
        {
            return null;
        }
    }

    /// <summary>Relative paths are relative to the policy file's directory; normalised so "a/../b" and "b" are one file.</summary>
    private string? ResolvePath(string path, string jsonPath)
    {
        string? full = ResolvePathQuiet(path);
        if (full is null)
        {
            Add(PolicyRule.BadValue, jsonPath, $"\"{path}\" is not a usable file path");
        }
        return full;
    }

    /// <summary>
    /// Host resources a network or VM holds exclusively (TAP devices, bridges, namespaces, UDP
    /// ports, writable files). Two holders of one resource would give two VMs a shared channel.
    /// </summary>
    private sealed class HostResources(PolicyValidator validator)
    {
        private readonly Dictionary<string, string> _owners = new(StringComparer.Ordinal);
        private readonly HashSet<string> _readOnlyFiles = new(StringComparer.Ordinal);
        private readonly List<(string File, string JsonPath)> _writableFiles = [];

        public void Claim(string resource, string jsonPath)
        {
            if (!_owners.TryAdd(resource, jsonPath))
            {
                validator.Add(PolicyRule.SharedHostResource, jsonPath, $"{resource} is already used by {_owners[resource]}; no two networks or VMs may share a host resource");
            }
        }

        public void ClaimWritable(string file, string jsonPath, string what)
        {
            if (!_owners.TryAdd("file " + file, jsonPath))
            {
                validator.Add(PolicyRule.SharedHostResource, jsonPath,
                    $"{what} at {file} is the same file as {_owners["file " + file]}; each writable file has one owner");
            }
            _writableFiles.Add((file, jsonPath));
        }

        public void NoteReadOnly(string file) => _readOnlyFiles.Add(file);

        public void CheckReadOnlyAliases()
        {
            foreach (var (file, jsonPath) in _writableFiles)
            {
                if (_readOnlyFiles.Contains(file))
                {
                    validator.Add(PolicyRule.SharedHostResource, jsonPath, $"{file} is a VM image; the appliance never writes to an image");
                }
            }
        }
    }
}
