namespace SecureVmm.Verification.Policy;

/// <summary>
/// Test counts for the policy and image properties: quick by default; set SECUREVMM_SOAK=1 for a
/// soak run with 40 times as many cases.
/// </summary>
internal static class PolicySoak
{
    private static readonly bool Enabled = Environment.GetEnvironmentVariable("SECUREVMM_SOAK") is { Length: > 0 } v && v != "0";

    public static int Tests(int quick) => Enabled ? quick * 40 : quick;
}
