namespace SecureVmm.Policy.Policy;

// VM rules: memory, image and signers, network binding and labels, devices, console,
// clock, audit, storage and sealing; shared host resources (docs/policy.md, "VMs").
public sealed partial class PolicyValidator
{
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
