using System.Collections.ObjectModel;

namespace CramCore.Internals;

/// <summary>A read-only list whose <see cref="ToString"/> shows its items (<c>[a, b, c]</c>), so a record that holds one prints it readably.</summary>
internal sealed class ReadableList<T>(IList<T> items) : ReadOnlyCollection<T>(items)
{
    public static new readonly ReadableList<T> Empty = new([]);

    public override string ToString() => "[" + string.Join(", ", this) + "]";
}
