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
}
