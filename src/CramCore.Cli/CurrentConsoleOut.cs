using System.Text;

namespace CramCore.Cli;

/// <summary>A writer that forwards to whatever <see cref="Console.Out"/> is at the time of each write (Spectre keeps the writer it is given; Console.SetOut may change it later).</summary>
internal sealed class CurrentConsoleOut : TextWriter
{
    public override Encoding Encoding => Console.Out.Encoding;

    public override void Write(char value) => Console.Out.Write(value);

    public override void Write(string? value) => Console.Out.Write(value);

    public override void Write(char[] buffer, int index, int count) => Console.Out.Write(buffer, index, count);

    public override void WriteLine(string? value) => Console.Out.WriteLine(value);

    public override void Flush() => Console.Out.Flush();
}
