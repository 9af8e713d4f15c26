using SecureVmm.Appliance.Demo;
using SecureVmm.Policy.Guests;
using SecureVmm.Policy.Images;
using SecureVmm.Policy.Policy;

namespace SecureVmm.Tests.Appliance;

/// <summary>A signed appliance in a scratch directory: keys, the project's guests as signed images, and a policy.</summary>
internal sealed class ApplianceTestKit : IDisposable
{
    public ApplianceTestKit()
    {
        Dir = Directory.CreateTempSubdirectory("svmm-appliance-test").FullName;
        Builder = new SignedApplianceBuilder(Dir);
    }

    public string Dir { get; }

    public SignedApplianceBuilder Builder { get; }

    public string Path(string name) => System.IO.Path.Combine(Dir, name);

    /// <summary>Signs an image of a project guest under its own name.</summary>
    public string GuestImage(string guest) => Builder.Image(guest, ImageKind.Multiboot, ProjectGuests.Build(guest)!.Bytes);

    public static NetworkDocument Network(string name, int index, string backend = "none", string level = "UNCLASSIFIED", string colour = "green") => new()
    {
        Name = name,
        Label = new LabelDocument { Level = level, Colour = colour },
        Backend = new BackendDocument { Type = backend },
        Mac = $"02:00:00:00:00:{index:x2}",
        Addresses = [$"10.9.{index}.10/24"],
    };

    public VmDocument Vm(string name, string image, string network, string level = "UNCLASSIFIED", string colour = "green",
        string[]? devices = null, string console = "serial", string clock = "realtime", bool recordData = false) => new()
    {
        Name = name,
        Label = new LabelDocument { Level = level, Colour = colour },
        MemoryMiB = 16,
        Image = new ImageReferenceDocument { Path = image, Name = System.IO.Path.GetFileNameWithoutExtension(image), Signers = ["release"] },
        Network = network,
        Devices = [.. devices ?? ["serial", "virtio-net"]],
        Console = console,
        Clock = clock,
        Audit = new AuditDocument { Path = Path($"audit/{name}.audit"), RecordData = recordData },
    };

    /// <summary>Writes and signs a policy over the given networks and VMs; returns its path.</summary>
    public string Policy(IReadOnlyList<NetworkDocument> networks, IReadOnlyList<VmDocument> vms) => Builder.Policy(new PolicyDocument
    {
        FormatVersion = 1,
        Appliance = "test appliance",
        Host = new HostDocument { MemoryBudgetMiB = 512 },
        RollbackStateFile = Path("state/rollback.json"),
        TrustAnchors = [Builder.ReleaseAnchor([.. vms.Select(v => v.Name!)])],
        Networks = [.. networks],
        Vms = [.. vms],
    });

    public ValidatedPolicy Load(string policyPath) => PolicyLoader.LoadVerified(policyPath, Builder.AdminKey.PublicKey);

    /// <summary>Waits until <paramref name="condition"/> holds, up to <paramref name="timeout"/>.</summary>
    public static bool WaitFor(Func<bool> condition, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (DateTime.UtcNow < deadline)
        {
            if (condition())
            {
                return true;
            }
            Thread.Sleep(20);
        }
        return condition();
    }

    public void Dispose()
    {
        try
        {
            Directory.Delete(Dir, true);
        }
        catch (IOException)
        {
        }
    }
}
