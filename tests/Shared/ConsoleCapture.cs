namespace CramCore.Tests;

/// <summary>Runs a `cram` command in-process and returns what it printed (tests using it share the "Console" collection).</summary>
internal static class ConsoleCapture
{
    public static string Stdout(Func<int> command)
    {
        var output = new StringWriter();
        TextWriter original = Console.Out;
        Console.SetOut(output);
        try
        {
            Assert.Equal(0, command());
        }
        finally
        {
            Console.SetOut(original);
        }
        return output.ToString();
    }
}
