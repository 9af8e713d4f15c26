using SecureVmm.Appliance;

return Cli.Run(args);
