using Xunit;

namespace SecureVmm.Tests.Policy;

/// <summary>
/// The CLI tests redirect the process-wide Console, so they run in a collection that xunit runs
/// on its own, after the parallel ones: nothing else writes to the Console while they capture it.
/// </summary>
[CollectionDefinition("PolicyConsole", DisableParallelization = true)]
public sealed class PolicyConsoleCollection;
